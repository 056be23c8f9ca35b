package senders

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// WebhookURLs reads the webhook URLs applications registered for senders
// (SetWebhookURL) straight from Redis: a process that forwards webhooks
// needs them, and neither the registry's cache nor CHATQ_SECRETS_KEY.
type WebhookURLs struct {
	Redis redis.UniversalClient
}

// WebhookURL returns the URL the application of sender registered, "" for
// none.
func (w WebhookURLs) WebhookURL(ctx context.Context, sender string) (string, error) {
	u, err := w.Redis.Get(ctx, webhookURLKey(Normalize(sender))).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the webhook URL of %s: %w", sender, err)
	}
	return u, nil
}
