package redisproc

import "syscall"

// sysProcAttr has the kernel kill redis-server when this process dies
// without killing it (a panic, a test's -timeout), so that no server
// outlives the run that started it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
