package chatarchitect

import "strings"

// IsOptOutCode reports whether a failure code says that the user opted out
// of the business's messages (131050 from WhatsApp, 1012 from Gupshup):
// chatq stops messaging that user.
func IsOptOutCode(code string) bool {
	switch strings.TrimSpace(code) {
	case "131050", "1012":
		return true
	}
	return false
}

// IsWindowClosedCode reports whether a failure code says that the user's
// 24-hour customer service window is closed (131047 from WhatsApp,
// 1004-1008 from Gupshup): only a template may reach that user until they
// write again.
func IsWindowClosedCode(code string) bool {
	switch strings.TrimSpace(code) {
	case "131047", "1004", "1005", "1006", "1007", "1008":
		return true
	}
	return false
}
