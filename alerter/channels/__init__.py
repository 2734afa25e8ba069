"""Channels: how a notification reaches people (mail, webhook, Slack, PagerDuty)."""
