"""TLS at the edge: nginx on the gateway host terminating TLS, proxying to the gateway's HTTP port.

The certificate and key come from the model (paths on the host); when unset (lab) a self-signed
pair is generated once. The site is checked with `nginx -t` (via a test main config that includes
the candidate) before it goes live, and nginx reloads only when it changed.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from citadel.components.edge_tls import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import nginx_activate


@deploy("edge_tls: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name="Install nginx and openssl",
        packages=["nginx", "openssl"],
        no_recommends=True,
    )
    files.link(
        name="Remove nginx's default site", path="/etc/nginx/sites-enabled/default", present=False
    )
    cert, key = cfg.cert_path(), cfg.key_path()
    if cfg.self_signed:
        if not host.get_fact(File, path=cert) or not host.get_fact(File, path=key):
            name, addr = ctx.host.name, ctx.host.address
            server.shell(
                name="Generate a self-signed certificate (edge_tls.certificate_file unset)",
                commands=[
                    f"install -d -m 0755 {shlex.quote(cert.rsplit('/', 1)[0])}",
                    f"install -d -m 0710 {shlex.quote(key.rsplit('/', 1)[0])}",
                    "openssl req -x509 -newkey rsa:2048 -sha256 -days 825 -nodes "
                    f"-subj /CN={name} -addext subjectAltName=IP:{addr},DNS:{name} "
                    f"-keyout {shlex.quote(key)} -out {shlex.quote(cert)} 2>/dev/null",
                    f"chmod 0600 {shlex.quote(key)}",
                ],
            )
    else:
        for path in (cert, key):
            if not host.get_fact(File, path=path):
                server.shell(
                    name=f"edge_tls: {path} is missing on the host",
                    commands=[
                        f"echo 'edge_tls: {path} (from the inventory) does not exist on "
                        f"{ctx.host.name}; put it there, or unset certificate_file and "
                        "key_file for a self-signed pair' >&2",
                        "exit 1",
                    ],
                )


@deploy("edge_tls: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    return put_changes(ctx.files("edge_tls"))


@deploy("edge_tls: activate")
def activate(ctx: DeployContext, cfg: Config, changed: Changes) -> None:
    nginx_activate(changed._replace(reload=changed.restart + changed.reload))


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
