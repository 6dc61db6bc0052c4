"""Entry point: `hvelv --help`."""

from __future__ import annotations

import typer

from hvelv import __version__
from hvelv.cli import consent, datasets, files, jobs, local, notify, remote, serve

app = typer.Typer(
    name="hvelv",
    help="Hvelv: a platform for sensitive health research data with enforced dynamic consent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command("init")(local.init)
app.command("serve")(serve.serve)
app.command("demo")(serve.demo)
app.command("login")(remote.login)
app.command("logout")(remote.logout)
app.command("whoami")(remote.whoami)

user_app = typer.Typer(help="Local user administration.", no_args_is_help=True)
user_app.command("create")(local.user_create)
app.add_typer(user_app, name="user")

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
db_app.command("upgrade")(local.db_upgrade)
app.add_typer(db_app, name="db")

audit_app = typer.Typer(help="The audit ledger.", no_args_is_help=True)
audit_app.command("verify")(local.audit_verify)
audit_app.command("list")(remote.audit_list)
app.add_typer(audit_app, name="audit")

outbox_app = typer.Typer(help="The notification outbox.", no_args_is_help=True)
outbox_app.command("send")(notify.outbox_send)
outbox_app.command("show")(notify.outbox_show)
app.add_typer(outbox_app, name="outbox")
app.add_typer(jobs.jobs_app, name="jobs")

config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
config_app.command("show")(local.config_show)
app.add_typer(config_app, name="config")

storage_app = typer.Typer(help="Blob storage.", no_args_is_help=True)
storage_app.command("migrate")(local.storage_migrate)
app.add_typer(storage_app, name="storage")

app.add_typer(consent.consent_app, name="consent")
app.add_typer(consent.keys_app, name="keys")

app.add_typer(remote.project_app, name="project")
app.add_typer(remote.member_app, name="member")
app.add_typer(remote.apikey_app, name="apikey")
files.register(app)
datasets.register(app)


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
