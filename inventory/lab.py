"""pyinfra inventory for the lab (`citadel lab up` first), built from lab.yml.

pyinfra inventory/lab.py deploy.py
"""

from pathlib import Path

from citadel.pyinfra_inventory import pyinfra_inventory

globals().update(pyinfra_inventory(Path(__file__).with_suffix(".yml")))
