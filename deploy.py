"""Converge each host: its roles' components in a fixed order, base first.

pyinfra inventory/lab.py deploy.py           # or: citadel apply -i inventory/lab.yml
pyinfra inventory/lab.py deploy.py --limit gateway
"""

from deploys import converge_host

converge_host()
