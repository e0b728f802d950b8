"""The fold: the user and item stages a micro-batch passes through, the item table they share, and what
scoring reads (user context, profile, item graph), explains (reasons) and learns online."""
