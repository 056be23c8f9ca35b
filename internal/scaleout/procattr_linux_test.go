package scaleout

import "syscall"

// sysProcAttr has the kernel kill a chatq process when the test binary dies
// without running its cleanups (a panic, a -timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
