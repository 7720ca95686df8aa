package local

// NodeLocal is true: a compute's datadir and mariadbd live on this node's
// disk, so the compute belongs to this node's daemon, which stops it when it
// stops.
func (d *Driver) NodeLocal() bool { return true }
