"""pyinfra inventory for production, built from production.yml (groups = roles).

    pyinfra inventory/production.py deploy.py

Validation (secrets included) runs here, before pyinfra connects to anything.
"""

from pathlib import Path

from citadel.pyinfra_inventory import pyinfra_inventory

globals().update(pyinfra_inventory(Path(__file__).with_suffix(".yml")))
