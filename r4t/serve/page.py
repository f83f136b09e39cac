"""The page at / : try the API in a browser. One self-contained HTML file (inline CSS and JS, nothing fetched but
the API itself): a query, K and the methods of GET /v1/info; one POST /v1/fanout per method, side by side."""

from functools import cache
from importlib import resources


@cache
def page_html() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
