"""The data at the edges: input events (decoded, validated) and audit events (one model, written and read)."""
