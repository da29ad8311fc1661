"""Server-side tools of agents: HTTP and built-in tools, the run loop that executes them between
upstream calls, executions (every step recorded) and human approvals (`POST /v1/chat/resume`)."""
