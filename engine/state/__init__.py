"""State: the store → partition → transaction interface with its RocksDB and in-memory backends, the
binary codecs of user and item state, and forgetting users (deletion and expiry)."""
