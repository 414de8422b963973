"""`trimtab init`: a first site config, commented, valid as written.

It declares the site (a fresh public key, the secret key read from the environment, your
origins, consent required), the features most rules start from, and one slot with two variants
and a rule, so `trimtab serve` runs at once and the page markup in docs/integrate.md works.
"""

from __future__ import annotations

import secrets

TEMPLATE = """\
# trimtab site config (trimtab init). Reference: docs/concepts.md; adding it to your site:
# docs/integrate.md. Check it with `trimtab validate {path}`.
site:
  id: {site_id}
  name: {name}
  # goes into the page (<script data-key=…>): it identifies the site, it is not a secret
  public_key: {public_key}
  # the admin key (console, admin API, force links), read from the environment
  secret_key: env:TRIMTAB_SECRET_KEY
  # the pages allowed to send events (scheme://host[:port]); "*" allows any
  origins: {origins}
  # required: nothing is sent before the reader accepts; implied: tracking until they refuse
  consent: required

storage:
  data_dir: {data_dir}

# Live features, computed per reader from what the tracker sends (docs/concepts.md, "Features").
features:
  scroll_depth_max: {{kind: scroll_depth_max, description: "deepest point reached on this page"}}
  scroll_velocity: {{kind: scroll_velocity, description: "median scroll speed (px/s), recent"}}
  page_views:
    {{kind: event_count, event: page_view, scope: session, description: "pages this session"}}
  interest: {{kind: interest, description: "what the reader reads most, by category"}}

# Slots: the parts of your pages trimtab may adjust. Mark them in the HTML with
# data-tt-slot="NAME" (docs/integrate.md, "Slot markup"); the page's own content is the default.
slots:
  cta:
    description: the call to action at the end of an article
    default: standard
    variants:
      standard: {{html: "<a href='/subscribe'>Subscribe</a>"}}
      # a template: {{{{ name }}}} is filled from the variant's fields and the page
      engaged:
        template: "<a href='/subscribe'>{{{{ headline }}}}</a>"
        headline: You read to the end. Subscribe?
    rules:
      - id: deep-reader
        description: read past 75 % of the page, not flicking through
        why: Because you read to the end of this article
        condition: {{scroll_depth_max: {{$gt: 0.75}}}}
        force: engaged
"""


def scaffold(
    site_id: str = "my-site",
    name: str = "My site",
    origins: list[str] | None = None,
    data_dir: str = "var/trimtab",
    path: str = "trimtab.yaml",
    public_key: str | None = None,
) -> str:
    """The config file's text."""
    listed = ", ".join(f'"{o}"' for o in (origins or ["http://localhost:8080"]))
    return TEMPLATE.format(
        site_id=site_id,
        name=name,
        public_key=public_key or "pk_" + secrets.token_urlsafe(12),
        origins=f"[{listed}]",
        data_dir=data_dir,
        path=path,
    )


__all__ = ["scaffold"]
