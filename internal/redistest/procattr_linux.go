package redistest

import "syscall"

// sysProcAttr has the kernel kill redis-server when the test binary dies
// without running its cleanups (a panic, a -timeout), so that no server
// outlives its test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
