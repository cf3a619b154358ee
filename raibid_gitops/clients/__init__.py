"""Clients of the backends (git, Gitea, Kubernetes, Redis); each translates its library's errors into ours."""
