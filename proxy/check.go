package proxy

import (
	"context"
	"errors"
	"time"

	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// credentials are what a client sent to prove its password, not yet
// checked.
type credentials struct {
	scramble  []byte // mysql_native_password: the reply to our nonce
	sha2      []byte // caching_sha2_password full authentication: the password
	encrypted bool   // sha2 is RSA-encrypted (plain connection), else cleartext over TLS
}

// passwordCheck is one password check: a login or a COM_CHANGE_USER.
type passwordCheck struct {
	login       string // the user name as sent, for the error message
	project     string // as the client named it
	role        string
	creds       credentials
	sameProject string // COM_CHANGE_USER: the role must belong to this project id
}

var (
	errWrongPassword = errors.New("wrong or empty password")
	errOtherProject  = errors.New("the role belongs to another project")
)

// checkPassword is the only place passwords are checked. It takes a token
// from the source's failed-login limiter first, and without one refuses
// (1129) having done no work: no lookup, no RSA decryption, no hashing.
// A success gives the token back. The answer then waits the delay its role
// earned by failing repeatedly; no lock or token is held meanwhile.
func (ss *session) checkPassword(ctx context.Context, pc passwordCheck) (stage1 []byte, projectID string, err error) {
	if !ss.s.limiter.take(ctx, ss.key) {
		return nil, "", ss.blocked()
	}
	ss.s.counters.inc(CountPasswordChecks)
	stage1, projectID, used, err := ss.verifyGuarded(ctx, pc)
	if d := ss.s.delays.observe(roleKey(pc, projectID), err == nil, time.Now()); d > 0 {
		ss.s.counters.inc(CountAuthDelayed)
		ss.log.Info("answer delayed: repeated failures against the role", "user", clip(pc.login, 64), "delay", d)
		sleep(ctx, d)
	}
	if err != nil {
		return nil, "", &refusal{kind: CountAuthFailed, reply: ss.accessDenied(pc.login, used), cause: err}
	}
	return stage1, projectID, nil
}

// verifyGuarded runs verify and settles the limiter token whatever happens,
// a panic included, so that a token is never held for good.
func (ss *session) verifyGuarded(ctx context.Context, pc passwordCheck) (stage1 []byte, projectID string, used bool, err error) {
	ok := false
	defer func() { ss.s.limiter.settle(ss.key, ok, time.Now()) }()
	stage1, projectID, used, err = ss.verify(ctx, pc)
	ok = err == nil
	return stage1, projectID, used, err
}

// verify looks the role up and checks the credentials against its hash.
// Unknown projects and roles are checked against a dummy hash, so that
// every failure does the same work and gets the same answer. projectID is
// the looked-up project's, even when the password is wrong.
func (ss *session) verify(ctx context.Context, pc passwordCheck) (stage1 []byte, projectID string, used bool, err error) {
	stage2, projectID, err := ss.lookup(ctx, pc.project, pc.role)
	stage1, used = ss.recoverStage1(pc.creds, stage2)
	switch {
	case err != nil:
		return nil, projectID, used, err
	case stage1 == nil || !wire.VerifyStage1(stage1, stage2):
		return nil, projectID, used, errWrongPassword
	case pc.sameProject != "" && projectID != pc.sameProject:
		return nil, projectID, used, errOtherProject
	}
	if key := ss.s.cfg.BindKey; key != nil {
		// The backend account is bound: log in to it with the derived
		// stage1, not the client's.
		stage1 = mdb.BoundStage1(key, projectID, pc.role, stage2)
	}
	return stage1, projectID, used, nil
}

// recoverStage1 returns the candidate SHA1(password) from the credentials
// (nil when there is none, e.g. an empty password) and whether a password
// was sent at all.
func (ss *session) recoverStage1(c credentials, stage2 []byte) (stage1 []byte, used bool) {
	if c.sha2 == nil {
		if len(c.scramble) == 0 {
			return nil, false
		}
		return wire.RecoverStage1(ss.nonce, c.scramble, stage2), true
	}
	pw := wire.TrimNUL(c.sha2)
	if c.encrypted {
		var err error
		if pw, err = wire.DecryptSha2Password(ss.s.rsaKey, ss.nonce, c.sha2); err != nil {
			return nil, true // undecryptable: a failed login, not a protocol error
		}
	}
	if len(pw) == 0 {
		return nil, false
	}
	return wire.Stage1(pw), true
}

// roleKey names the role a check was about for its delay: by project id
// when the project exists, so that its name and id share one score, else
// as the client named it, so that made-up roles are delayed alike and
// the delay does not tell which exist.
func roleKey(pc passwordCheck, projectID string) string {
	if projectID == "" {
		projectID = "?" + pc.project
	}
	return projectID + "\x00" + pc.role
}
