"""Text sources, the tokenizer and token shards (uint16 ids, uint32 for vocabularies beyond 65536)."""
