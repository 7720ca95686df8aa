package local

// NodeLocal is true: a compute's datadir and mariadbd live on this node's
// disk, so the compute belongs to this node's daemon, which stops it when it
// stops.
func (d *Driver) NodeLocal() bool { return true }

// BoundsStorage is false: computes share this node's filesystem, and
// StorageBytes measures each one's folder for the manager's limit.
func (d *Driver) BoundsStorage() bool { return false }
