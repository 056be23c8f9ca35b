package bench

import "syscall"

// sysProcAttr has the kernel kill redis-server when chatq dies without
// cleaning up (a panic, a SIGKILL), so that no server outlives its run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
