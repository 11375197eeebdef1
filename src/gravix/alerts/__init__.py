"""Alerts: rules evaluated on the query layer, states and their history, and the
notifications they send (docs/alerts.md)."""
