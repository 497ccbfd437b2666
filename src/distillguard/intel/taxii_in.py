"""TAXII 2.1 collections in: a collection's STIX objects, pulled incrementally.

The collection's manifest is read first: the newest ``date_added`` it lists (the server's own
clock, as the specification asks a poller to use) is kept per collection URL in
``intel_pulls``, and the next pull asks only for objects ``added_after`` it. Objects added
between the manifest and the object pages are read again by the next pull, which stores them
under the same ids (indicators.Indicator.indicator_id): a pull never misses an object and
never stores one twice.
"""

from __future__ import annotations

from collections import Counter

import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from distillguard.intel import stix_in
from distillguard.intel.indicators import Indicator, IntelError

#: objects per page asked of the server (it may send fewer)
PAGE = 500


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def pull(url: str, added_after: str | None, token: str | None = None
         ) -> tuple[list[Indicator], Counter, str | None]:
    """(indicators, skipped by reason, newest date_added seen) of the collection at ``url``,
    only objects added after ``added_after`` when given."""
    auth = _Bearer(token) if token else None
    since = {"added_after": added_after} if added_after else {}
    try:
        collection = Collection(url, auth=auth)
        newest = added_after
        for page in as_pages(collection.get_manifest, per_request=PAGE, **since):
            for entry in page.get("objects", []) or []:
                added = entry.get("date_added") if isinstance(entry, dict) else None
                if isinstance(added, str) and (newest is None or added > newest):
                    newest = added
        objects: list = []
        for page in as_pages(collection.get_objects, per_request=PAGE, **since):
            objects.extend(page.get("objects", []) or [])
    except (TAXIIServiceException, requests.RequestException, ValueError) as exc:
        raise IntelError(f"{url}: TAXII pull failed ({str(exc).splitlines()[0][:160]})") from None
    found, skipped = stix_in.read_objects(objects, url, url)
    return found, skipped, newest
