"""Provider adapters: local (offline), gemini (google-genai SDK), storage, rate limits."""
