"""The operator console: ``emotionviz console`` serves web pages to watch the queues,
workers and work, and to replay what failed (docs/operations.md, "The console").

Server-rendered (Starlette + Jinja2 templates, uvicorn), every asset in this package;
security in security.py; what each page shows in data.py."""
