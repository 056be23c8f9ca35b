package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatq/chatq/internal/tenants"
)

func (p *program) keysCommand() *cobra.Command {
	return group("keys <command>", "create, list or revoke tenant keys",
		"Manages tenant keys: API keys that speak for one tenant, as /v1/keys does. chatq stores only a\n"+
			"key's hash, so a key is shown once, when it is created.\nNeeds CHATQ_REDIS_URL.",
		p.keysCreateCommand(), p.keysListCommand(), p.keysRevokeCommand())
}

// withKeys opens Redis and runs f with the tenant keys in it.
func withKeys(ctx context.Context, f func(*tenants.Keys) error) error {
	_, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return f(tenants.NewKeys(rdb))
}

func (p *program) keysCreateCommand() *cobra.Command {
	var tenant, name string
	var asJSON bool
	cmd := command("create --tenant T --name N [--json]", "create a tenant key and print it, this once",
		"Creates a key for a tenant and prints it: this is the only time it is shown. --name says where\n"+
			"the key is used, such as crm-prod.\nNeeds CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			for _, req := range []struct{ flag, value string }{{"--tenant", tenant}, {"--name", name}} {
				if req.value == "" {
					return usageError(prefixed(cmd, req.flag+" is required"))
				}
			}
			return withKeys(cmd.Context(), func(ks *tenants.Keys) error {
				k, secret, err := ks.Create(cmd.Context(), tenant, name)
				if err != nil {
					return flagError(cmd, err)
				}
				if asJSON {
					return p.printJSON(map[string]any{"id": k.ID, "key": secret, "tenant": k.Tenant, "name": k.Name, "created_at": k.CreatedAt})
				}
				fmt.Fprintf(p.stdout, "key %s created for tenant %s (%s)\n\n  %s\n\nKeep it now: chatq stores only its hash and cannot show it again.\n",
					k.ID, k.Tenant, k.Name, secret)
				return nil
			})
		})
	cmd.Flags().StringVar(&tenant, "tenant", "", "the tenant the key speaks for (required)")
	cmd.Flags().StringVar(&name, "name", "", "where the key is used, such as crm-prod (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the key as JSON, as POST /v1/keys answers")
	return cmd
}

func (p *program) keysListCommand() *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := command("list [--tenant T] [--json]", "list the tenant keys (never the keys themselves)",
		"Lists the tenant keys, oldest first: their ids, tenants and names, never a key.\nNeeds CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			return withKeys(cmd.Context(), func(ks *tenants.Keys) error {
				all, err := ks.List(cmd.Context())
				if err != nil {
					return err
				}
				keys := []tenants.Key{}
				for _, k := range all {
					if tenant == "" || k.Tenant == tenant {
						keys = append(keys, k)
					}
				}
				if asJSON {
					return p.printJSON(map[string]any{"keys": keys})
				}
				tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTENANT\tNAME\tCREATED")
				for _, k := range keys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Tenant, k.Name, k.CreatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		})
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's keys")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"keys":[...]} as GET /v1/keys answers`)
	return cmd
}

func (p *program) keysRevokeCommand() *cobra.Command {
	return command("revoke ID", "revoke a tenant key at once",
		"Revokes a tenant key: a request that carries it is refused from now on.\nNeeds CHATQ_REDIS_URL.",
		oneArg("the key's id (key_...)"), func(cmd *cobra.Command, args []string) error {
			return withKeys(cmd.Context(), func(ks *tenants.Keys) error {
				k, err := ks.Revoke(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(p.stdout, "key %s of tenant %s (%s) revoked\n", k.ID, k.Tenant, k.Name)
				return nil
			})
		})
}
