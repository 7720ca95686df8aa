package compute

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/store"
)

// OwnerRole is the role every project gets at creation.
const OwnerRole = mariadb.OwnerRole

// ErrInvalidRole means a role name is not allowed.
var ErrInvalidRole = errors.New("invalid role name")

// roleName: MariaDB user names are at most 80 characters; we keep them to a
// safe alphabet so they never need quoting beyond backquotes.
var roleName = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,31}$`)

// ValidateRoleName checks a role name. Names starting with "serverlessd" and
// MariaDB's own accounts are reserved for the daemon.
func ValidateRoleName(name string) error {
	if !roleName.MatchString(name) {
		return fmt.Errorf("%w %q: use 1-32 characters from a-z, A-Z, 0-9, _ and -", ErrInvalidRole, name)
	}
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "serverlessd") || lower == "mariadb.sys" || lower == "mysql" || lower == "public" {
		return fmt.Errorf("%w %q: the name is reserved", ErrInvalidRole, name)
	}
	return nil
}

// NewPassword returns a random password of 24 characters from a URL- and
// shell-safe alphabet (about 142 bits).
func NewPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// CreateRole creates a role with a generated password and returns the
// password, which is never stored. The role exists in the running compute at
// once; a suspended compute gets it before it is next marked active.
func (m *Manager) CreateRole(ctx context.Context, projectID, name string) (*store.Role, string, error) {
	if err := ValidateRoleName(name); err != nil {
		return nil, "", err
	}
	pw := NewPassword()
	now := store.Now()
	r := &store.Role{ProjectID: projectID, Name: name, PasswordHash: mariadb.HashPassword(pw), CreatedAt: now, UpdatedAt: now}
	err := m.withActive(ctx, projectID, func() error {
		if err := m.st.CreateRole(ctx, r); err != nil {
			return fmt.Errorf("create role %q in project %s: %w", name, projectID, err)
		}
		return nil
	})
	return r, pw, err
}

// ResetPassword gives a role a new generated password and returns it.
func (m *Manager) ResetPassword(ctx context.Context, projectID, name string) (*store.Role, string, error) {
	pw := NewPassword()
	var r *store.Role
	err := m.withActive(ctx, projectID, func() error {
		var err error
		if r, err = m.st.GetRole(ctx, projectID, name); err != nil {
			return fmt.Errorf("reset password of role %q in project %s: %w", name, projectID, err)
		}
		r.PasswordHash, r.UpdatedAt = mariadb.HashPassword(pw), store.Now()
		return m.st.UpdateRole(ctx, r)
	})
	return r, pw, err
}

// DeleteRole removes a role from the store and the running compute.
func (m *Manager) DeleteRole(ctx context.Context, projectID, name string) error {
	return m.withActive(ctx, projectID, func() error {
		if err := m.st.DeleteRole(ctx, projectID, name); err != nil {
			return fmt.Errorf("delete role %q in project %s: %w", name, projectID, err)
		}
		return nil
	})
}

// withActive runs a role change under the compute's lock, then pushes the
// roles to the compute if it is active on this node. Holding the lock means a
// start in progress either sees the change or is followed by this push.
func (m *Manager) withActive(ctx context.Context, projectID string, change func() error) error {
	c, err := m.st.GetComputeByProject(ctx, projectID)
	if errors.Is(err, store.ErrNotFound) {
		return change() // no compute yet: its first start syncs the roles
	}
	if err != nil {
		return err
	}
	unlock := m.lock(c.ID)
	defer unlock()
	if err := change(); err != nil {
		return err
	}
	if c, err = m.st.GetCompute(ctx, c.ID); err != nil {
		return err
	}
	if c.State != store.StateActive || !m.isWarm(c) {
		return nil
	}
	if err := m.syncRoles(ctx, c, c.Address); err != nil {
		return fmt.Errorf("role saved, but applying it to the running compute %s failed (it is applied at the next start): %w", c.ID, err)
	}
	return nil
}

// syncRoles makes the compute's users at host '%' exactly the store's roles,
// with the same hashes, after bringing every account back inside the tenant
// privilege set. It runs on every start before the compute is marked
// active, and after every role change while it is active.
func (m *Manager) syncRoles(ctx context.Context, c *store.Compute, addr string) error {
	t0 := time.Now()
	roles, err := m.st.ListRoles(ctx, c.ProjectID)
	if err != nil {
		return fmt.Errorf("list roles: %w", err)
	}
	conn, err := m.adminConn(ctx, c, addr)
	if err != nil {
		return err
	}
	defer quit(conn)
	if err := m.audit(c, conn); err != nil {
		return err
	}
	have, err := mariadb.Users(conn)
	if err != nil {
		return fmt.Errorf("compute %s: %w", c.ID, err)
	}
	n, err := m.pushRoles(c, conn, roles, have)
	if err != nil {
		return err
	}
	if n > 0 {
		m.log.Info("roles applied", "compute", c.ID, "project", c.ProjectID, "statements", n,
			"duration_ms", float64(time.Since(t0).Microseconds())/1000)
	}
	return nil
}

// pushRoles makes the compute's accounts (have: name -> hash) the roles,
// each with its account hash, and returns how many statements it ran.
func (m *Manager) pushRoles(c *store.Compute, conn mariadb.Execer, roles []store.Role, have map[string]string) (int, error) {
	want := make([]mariadb.Role, len(roles))
	for i, r := range roles {
		hash, err := m.accountHash(c.ProjectID, r.Name, r.PasswordHash)
		if err != nil {
			return 0, fmt.Errorf("compute %s: %w", c.ID, err)
		}
		want[i] = mariadb.Role{Name: r.Name, Hash: hash}
	}
	stmts := mariadb.SyncStatements(want, have, func(name string) bool { return ValidateRoleName(name) == nil })
	for _, q := range stmts {
		if _, err := conn.Execute(q); err != nil {
			return 0, fmt.Errorf("apply roles to compute %s: %w", c.ID, err)
		}
	}
	return len(stmts), nil
}

// accountHash is the hash a role's account gets in its compute: the
// role's own, or with a bind key (SetBindKey) the bound one that only the
// daemon's proxy can log in with (mariadb.BoundHash).
func (m *Manager) accountHash(projectID, role, hash string) (string, error) {
	if m.bindKey == nil {
		return hash, nil
	}
	return mariadb.BoundHash(m.bindKey, projectID, role, hash)
}

// SetBindKey makes every role's account in the computes a bound one,
// derived from its hash with key: a tenant's password then opens its
// compute only through the daemon's proxy, which must be given the same
// key. Set it before serving; it must stay the same for as long as
// computes run with accounts made with it.
func (m *Manager) SetBindKey(key []byte) { m.bindKey = key }

// audit brings the compute's accounts back inside the tenant privilege set
// and logs what it had to change: outside a first start after an upgrade,
// a change means a tenant tried to reach past its privileges.
func (m *Manager) audit(c *store.Compute, conn mariadb.Execer) error {
	fixed, err := mariadb.Audit(conn)
	if err != nil {
		return fmt.Errorf("compute %s: %w", c.ID, err)
	}
	if len(fixed) > 0 {
		m.log.Warn("privileges outside the tenant set restored", "compute", c.ID, "project", c.ProjectID, "statements", fixed)
	}
	return nil
}

// adminConn logs in to the compute with the daemon's admin account.
func (m *Manager) adminConn(ctx context.Context, c *store.Compute, addr string) (*client.Conn, error) {
	cred, err := m.drv.Admin(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("admin credentials for compute %s: %w", c.ID, err)
	}
	// A tenant can hold locks the daemon's statements wait for (LOCK
	// TABLES, a long write): every read and write of the daemon's session
	// has a deadline, and so do its lock waits inside MariaDB, so that no
	// tenant stalls the scheduler that serves every compute.
	deadlines := func(conn *client.Conn) error {
		conn.ReadTimeout, conn.WriteTimeout = adminTimeout, adminTimeout
		return nil
	}
	conn, err := client.ConnectWithContext(ctx, strings.TrimPrefix(addr, "unix:"), cred.User, cred.Password, "",
		10*time.Second, deadlines)
	if err != nil {
		return nil, fmt.Errorf("admin login to compute %s at %s: %w", c.ID, addr, err)
	}
	if _, err := conn.Execute(mariadb.AdminSession); err != nil {
		conn.Close()
		return nil, fmt.Errorf("admin session on compute %s: %w", c.ID, err)
	}
	return conn, nil
}

// quit ends a session of the daemon's account with COM_QUIT, which
// mariadbd takes as a clean end (a bare close is logged as an aborted
// connection, each time the scheduler looks at a compute).
func quit(conn *client.Conn) {
	if conn.Quit() != nil {
		conn.Close()
	}
}

// adminTimeout bounds each read and write of the daemon's sessions; the
// lock waits inside MariaDB (mariadb.AdminSession) end well before it.
const adminTimeout = 30 * time.Second

// Busy reports client work in progress on an active compute: a statement
// running, or a transaction open (an idle-in-transaction session is work
// too). It returns a description for the log, or "" when the compute is idle.
func (m *Manager) Busy(ctx context.Context, computeID string) (string, error) {
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return "", err
	}
	if c.State != store.StateActive {
		return "", nil
	}
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return "", err
	}
	defer quit(conn)
	busy, err := mariadb.Busy(conn)
	if err != nil {
		return "", fmt.Errorf("compute %s: %w", computeID, err)
	}
	return busy, nil
}

// PullRoles copies into the store the users that SQL created, changed or
// dropped in the compute ('name'@'%' with a native password), so that they
// can log in through the proxy, and dropped ones cannot. It runs while the
// compute is active (from the scheduler, when it had traffic) and before
// every suspend.
func (m *Manager) PullRoles(ctx context.Context, computeID string) error {
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return err
	}
	if c.State != store.StateActive || !m.isWarm(c) {
		return nil
	}
	return m.pullRoles(ctx, c)
}

// pullRoles is PullRoles for a caller that holds the compute's lock.
func (m *Manager) pullRoles(ctx context.Context, c *store.Compute) error {
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return err
	}
	defer quit(conn)
	// Audit first: a user that holds more than the tenant set (say, the
	// daemon's account renamed) must never reach the store, where the
	// proxy would let it log in.
	if err := m.audit(c, conn); err != nil {
		return err
	}
	have, err := mariadb.Users(conn)
	if err != nil {
		return fmt.Errorf("compute %s: %w", c.ID, err)
	}
	roles, err := m.st.ListRoles(ctx, c.ProjectID)
	if err != nil {
		return err
	}
	stored := map[string]store.Role{}
	for _, r := range roles {
		stored[r.Name] = r
	}
	var changes []string
	for name, hash := range have {
		hash = strings.ToUpper(hash)
		if ValidateRoleName(name) != nil || !mariadb.NativeHash.MatchString(hash) {
			continue // a reserved name, or a plugin the proxy cannot verify
		}
		r, ok := stored[name]
		if ok {
			if account, err := m.accountHash(c.ProjectID, name, r.PasswordHash); err == nil && account == hash {
				continue // the account as the daemon made it
			}
		}
		switch {
		case !ok:
			now := store.Now()
			err = m.st.CreateRole(ctx, &store.Role{ProjectID: c.ProjectID, Name: name, PasswordHash: hash, CreatedAt: now, UpdatedAt: now})
			changes = append(changes, "+"+name)
		case r.PasswordHash != hash:
			r.PasswordHash, r.UpdatedAt = hash, store.Now()
			err = m.st.UpdateRole(ctx, &r)
			changes = append(changes, "~"+name)
		}
		if err != nil {
			return fmt.Errorf("store role %q of project %s: %w", name, c.ProjectID, err)
		}
	}
	for name := range stored {
		if _, ok := have[name]; !ok {
			if err := m.st.DeleteRole(ctx, c.ProjectID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("delete role %q of project %s: %w", name, c.ProjectID, err)
			}
			changes = append(changes, "-"+name)
		}
	}
	if len(changes) == 0 {
		return nil
	}
	m.log.Info("roles changed in SQL copied to the store", "compute", c.ID, "project", c.ProjectID, "changes", changes)
	if m.bindKey == nil {
		return nil
	}
	// The accounts SQL made or changed have the tenant's own hash: bind
	// them now, so that their password opens the compute only through
	// the daemon.
	if roles, err = m.st.ListRoles(ctx, c.ProjectID); err != nil {
		return err
	}
	_, err = m.pushRoles(c, conn, roles, have)
	return err
}

// KillThread kills a backend thread of an active compute (its query only,
// or its connection) as the daemon's account, for a tenant role that may
// not kill another role's threads itself. The daemon's own threads are
// never killed this way.
func (m *Manager) KillThread(ctx context.Context, computeID string, thread uint32, queryOnly bool) error {
	return m.withAdmin(ctx, computeID, func(_ *store.Compute, conn *client.Conn) error {
		return mariadb.Kill(conn, thread, queryOnly)
	})
}

// KillStatement kills, as the daemon's account, the statement thread runs
// on computeID while still() holds (mariadb.KillStatement).
func (m *Manager) KillStatement(ctx context.Context, computeID string, thread uint32, still func() bool) error {
	return m.withAdmin(ctx, computeID, func(_ *store.Compute, conn *client.Conn) error {
		return mariadb.KillStatement(conn, thread, still)
	})
}

// withAdmin runs fn with the compute as stored and a connection of the
// daemon's account to it.
func (m *Manager) withAdmin(ctx context.Context, computeID string, fn func(*store.Compute, *client.Conn) error) error {
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return err
	}
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return err
	}
	defer quit(conn)
	return fn(c, conn)
}
