"""Text sources, the tokenizer and uint16 token shards."""
