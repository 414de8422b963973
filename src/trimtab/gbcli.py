"""`trimtab import growthbook FILE` and `trimtab export growthbook CONFIG`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from trimtab.config import ConfigError, load_config, parse_config
from trimtab.gbpayload import PayloadError, export_payload, import_payload

err = Console(stderr=True, soft_wrap=True)
import_app = typer.Typer(help="Turn another tool's configuration into a trimtab config.")

HEADER = """\
# Imported from a GrowthBook SDK payload ({source}) by `trimtab import growthbook`.
# Each GrowthBook feature is a slot; a variant's `value` is the feature value it stands for.
# Add `site:` (keys, origins, consent) and `features:` before serving.
"""


@import_app.command("growthbook")
def import_growthbook(
    file: Annotated[Path, typer.Argument(help="A GrowthBook SDK payload (JSON), as exported.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the config here (default: stdout).")
    ] = None,
) -> None:
    """Convert a GrowthBook features payload into a trimtab config (YAML).

    Everything trimtab cannot evaluate exactly as GrowthBook does (prerequisites, filters,
    saved groups, encrypted payloads, …) is refused with the field that holds it.
    """
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        err.print(
            f"[bold red]cannot read[/] {escape(str(file))}: {escape(str(exc.strerror or exc))}"
        )
        raise typer.Exit(2) from None
    except json.JSONDecodeError as exc:
        err.print(f"[bold red]not JSON[/] {escape(str(file))}: {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        config = import_payload(data)
        parse_config(config, str(file))
    except PayloadError as exc:
        err.print(f"[bold red]cannot import[/] {escape(str(file))}: {escape(str(exc))}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"[bold red]cannot import[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    text = HEADER.format(source=file.name) + yaml.safe_dump(
        config, sort_keys=False, allow_unicode=True
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"{len(config['slots'])} slots written to {output}")


def export_growthbook(config_path: Path, output: Path | None) -> None:
    """Print (or write) CONFIG's slots as a GrowthBook SDK payload; left-out slots on stderr."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        err.print(f"[bold red]invalid config[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    payload = export_payload(config)
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"{len(payload['features'])} features written to {output}")
    for slot, reason in payload["trimtab"]["excluded"].items():
        err.print(f"left out {slot}: {escape(str(reason))}", highlight=False)
