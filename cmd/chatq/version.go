package main

import (
	"runtime/debug"
	"strings"
)

// buildVersion is what chatq --version prints after "chatq": the release
// version and commit given at link time, or else the module version and
// the commit Go recorded of the build (go build in a git checkout records
// them; go run and a build without .git do not).
func buildVersion(release, revision string) string {
	info, _ := debug.ReadBuildInfo()
	return describeBuild(release, revision, info)
}

func describeBuild(release, revision string, info *debug.BuildInfo) string {
	modified := false
	if info != nil {
		if release == "" {
			release = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if revision == "" {
					revision = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	b.WriteString(cmpOr(release, "(devel)"))
	if revision != "" {
		b.WriteString(" (commit " + revision)
		if modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	return b.String()
}
