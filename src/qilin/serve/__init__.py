"""Serving a trained model: OpenAI-compatible API (app.py) over batching engines (engine.py), the
request protocol (protocol.py), terminal chat (chat.py), the chat page (static/index.html)."""
