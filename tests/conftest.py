"""Shared pytest setup. Fixtures live in plugin modules, one per backend, so that each can be
read (and owned) on its own:

- ``fixtures_redis``  real redis-server on a free loopback port
- ``fixtures_stack``  etcd + kube-apiserver, Flux controllers, Gitea (the real local stack)
- ``fixtures_gitops`` config repositories made by `raibid gitops init`
- ``fixtures_pool``   a generated repository bootstrapped onto the stack (Flux, KEDA, Redis)
"""

pytest_plugins = ["fixtures_redis", "fixtures_stack", "fixtures_gitops", "fixtures_pool"]
