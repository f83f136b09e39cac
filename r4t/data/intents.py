"""Abstract intent queries for the open-ended abstract retrieval (OAR) task.

OAR has no reference sets: a query is a broad intent ("bohemian festival outfit", "rainy sunday
playlist") and the retriever must return a coherent, diverse set of catalog items for it. This
module supplies several hundred such intents per domain and a train/val/test split of them.

The intents are composed from hand-written facet lists (styles x occasions, moods x activities,
eras x settings, ...) under several phrasing templates, plus a hand-written list of freestanding
intents. Every choice (which facet pairs are used, which templates phrase them) is made by a
SHA-256 hash of the facet names, so the lists are identical on every call, process and Python
version; there is no random generator involved.

Each intent carries a private *facet key*: the facet combination it was composed from (e.g.
``style-occasion:bohemian|festival``), or its own text for a freestanding intent. Splits hash the
facet key, not the text, so the same combination phrased by two templates always lands in the same
split and the test split holds out unseen combinations, not just unseen wordings. (Single facets do
recur across splits: "bohemian" is in train and test, paired with different occasions.)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple

from r4t.errors import ConfigError, DataError

MIN_WORDS, MAX_WORDS = 2, 8


class _Record(NamedTuple):
    text: str
    key: str


def _unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) determined by `parts` (hashlib, never the salted hash())."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


_WORD = re.compile(r"[a-z0-9&']+(?:-[a-z0-9&']+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Case- and whitespace-normalized form of an intent, used to decide that two intents are the same."""
    return " ".join(text.lower().split())


def _articles(text: str) -> str:
    """Fix the indefinite article a composed phrase got: "a old money twist" -> "an old money twist"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


@dataclass(frozen=True)
class _Template:
    group: str          # templates of one group are near-synonyms; a facet pair gets at most one per group
    fmt: str            # str.format pattern over the facet fields
    needs: tuple[str, ...]


def _tpl(group: str, fmt: str) -> _Template:
    return _Template(group, fmt, tuple(re.findall(r"\{(\w+)\}", fmt)))


class _Builder:
    """Collects (text, key) records, rejecting exact duplicates and word-order-only near-duplicates."""

    def __init__(self, domain: str):
        self.domain = domain
        self.records: list[_Record] = []
        self._texts: dict[str, str] = {}  # text -> facet key
        self._bags: set[tuple[str, ...]] = set()

    def fits(self, text: str) -> bool:
        n = len(text.split())
        return MIN_WORDS <= n <= MAX_WORDS

    def add(self, text: str, key: str, strict: bool = False) -> bool:
        text = normalize(text)
        bag = tuple(sorted(_words(text)))
        ok = self.fits(text) and text not in self._texts and bag not in self._bags
        if not ok:
            if strict:
                raise AssertionError(f"{self.domain} intent {text!r} is a duplicate or has a bad length")
            return False
        self._texts[text] = key
        self._bags.add(bag)
        self.records.append(_Record(text, key))
        return True

    def compose(self, family: str, names: tuple[str, ...], fields: dict[str, str | None],
                templates: list[_Template], second_rate: float) -> None:
        """Phrase one facet combination with one template, and with a second of another group at `second_rate`.

        The templates are ordered by a hash of (family, names, template), so the choice is fixed per
        combination but varies across combinations. Every phrasing shares the key family:names.
        """
        key = _key(family, names)
        seed = (self.domain, family, *names)
        usable = [t for t in templates if all(fields.get(f) for f in t.needs)]
        usable.sort(key=lambda t: _unit("template", *seed, t.fmt))
        want = 2 if _unit("second", *seed) < second_rate else 1
        render = {t: normalize(_articles(t.fmt.format(**fields))) for t in usable}
        # A phrasing already present (an anchor) counts as this combination's phrasing of its group.
        groups = {t.group for t in usable if self._texts.get(render[t]) == key}
        for t in usable:
            if len(groups) >= want:
                return
            if t.group not in groups and self.add(render[t], key):
                groups.add(t.group)


def _key(family: str, names: tuple[str, ...]) -> str:
    return f"{family}:{'|'.join(names)}"


def _pairs(domain: str, family: str, left: list, right: list, ok: Callable, rate: float) -> list[tuple]:
    """The compatible (left, right) facet pairs, thinned to about `rate` of them by a stable hash.

    A facet is a tuple whose first field is its name, or None with the second field naming it.
    """
    out = []
    for a in left:
        for b in right:
            if ok(a, b) and _unit("pick", domain, family, a[0] or a[1], b[0] or b[1]) < rate:
                out.append((a, b))
    return out


# ---------------------------------------------------------------------------------------------
# Fashion facets
# ---------------------------------------------------------------------------------------------

# (style, lowest formality, highest formality, occasion tags it does not suit, usable as "dress X")
# Formality: 1 athletic/very casual, 2 casual, 3 smart casual, 4 dressy/business, 5 formal.
_STYLES: list[tuple[str, int, int, frozenset[str], bool]] = [
    ("bohemian", 1, 4, frozenset({"snow"}), True),
    ("minimalist", 1, 5, frozenset(), True),
    ("preppy", 2, 4, frozenset(), True),
    ("grunge", 1, 3, frozenset(), True),
    ("old money", 2, 5, frozenset({"active"}), True),
    ("streetwear", 1, 3, frozenset(), False),
    ("coastal", 1, 4, frozenset({"cold", "snow"}), True),
    ("cottagecore", 1, 4, frozenset({"snow", "active"}), True),
    ("business casual", 3, 4, frozenset(), True),
    ("edgy", 1, 5, frozenset(), True),
    ("romantic", 2, 5, frozenset({"active"}), True),
    ("sporty", 1, 2, frozenset(), True),
    ("y2k", 1, 3, frozenset({"active", "snow"}), True),
    ("parisian chic", 2, 5, frozenset({"active"}), False),
    ("scandinavian", 1, 4, frozenset(), False),
    ("dark academia", 2, 4, frozenset({"hot", "active"}), False),
    ("athleisure", 1, 2, frozenset(), False),
    ("vintage", 1, 5, frozenset(), True),
    ("western", 1, 3, frozenset(), True),
    ("monochrome", 2, 5, frozenset(), True),
    ("quiet luxury", 3, 5, frozenset({"active"}), False),
    ("punk", 1, 2, frozenset({"active"}), True),
    ("90s", 1, 3, frozenset(), True),
    ("70s", 1, 3, frozenset({"snow"}), True),
    ("smart casual", 3, 3, frozenset(), True),
    ("all-black", 1, 5, frozenset({"hot"}), False),
    ("gorpcore", 1, 2, frozenset(), False),
    ("clean girl", 1, 3, frozenset({"active"}), False),
    ("coquette", 2, 4, frozenset({"active", "snow"}), False),
    ("balletcore", 2, 3, frozenset({"active", "snow"}), False),
    ("techwear", 1, 3, frozenset(), False),
    ("nautical", 2, 3, frozenset({"cold", "snow", "active"}), False),
    ("tropical", 1, 3, frozenset({"cold", "snow"}), False),
    ("classic", 2, 5, frozenset(), True),
    ("colorful", 1, 4, frozenset(), True),
    ("elegant", 3, 5, frozenset({"active"}), True),
    ("androgynous", 1, 5, frozenset(), True),
    ("cozy", 1, 3, frozenset({"hot"}), True),
    ("rock chic", 1, 3, frozenset({"active"}), False),
    ("relaxed", 1, 3, frozenset(), False),
    ("mod", 2, 4, frozenset({"active", "snow"}), False),
    ("earthy", 1, 3, frozenset(), False),
]

# (compound form or None, "for ..." phrase, formality, tags)
_OCCASIONS: list[tuple[str | None, str, int, frozenset[str]]] = [
    ("festival", "for a festival", 1, frozenset({"hot"})),
    ("first date", "for a first date", 3, frozenset()),
    ("office", "for the office", 4, frozenset()),
    ("wedding guest", "for a wedding", 5, frozenset()),
    ("beach vacation", "for a beach vacation", 1, frozenset({"hot"})),
    ("rainy autumn day", "for a rainy autumn day", 2, frozenset({"cold"})),
    ("ski trip", "for a ski trip", 1, frozenset({"cold", "snow", "active"})),
    ("gallery opening", "for a gallery opening", 4, frozenset()),
    ("job interview", "for a job interview", 4, frozenset()),
    ("brunch", "for brunch", 3, frozenset()),
    ("airport", "for the airport", 2, frozenset()),
    ("date night", "for date night", 4, frozenset()),
    ("cocktail party", "for a cocktail party", 5, frozenset()),
    ("gala", "for a gala", 5, frozenset()),
    ("concert", "for a concert", 1, frozenset()),
    ("picnic", "for a picnic", 2, frozenset({"hot"})),
    ("garden party", "for a garden party", 4, frozenset({"hot"})),
    ("rooftop bar", "for a rooftop bar", 3, frozenset()),
    ("farmers market", "for the farmers market", 2, frozenset()),
    ("city break", "for a city break", 2, frozenset()),
    ("road trip", "for a road trip", 1, frozenset()),
    ("hiking", "for a day hike", 1, frozenset({"active"})),
    ("camping", "for a camping trip", 1, frozenset({"active"})),
    ("theme park", "for a day at a theme park", 1, frozenset({"hot", "active"})),
    ("christmas party", "for a christmas party", 4, frozenset({"cold"})),
    ("new year's eve", "for new year's eve", 5, frozenset({"cold"})),
    ("thanksgiving", "for thanksgiving dinner", 3, frozenset({"cold"})),
    ("graduation", "for a graduation ceremony", 4, frozenset()),
    ("baby shower", "for a baby shower", 3, frozenset()),
    ("first day of college", "for the first day of college", 2, frozenset()),
    ("networking event", "for a networking event", 4, frozenset()),
    ("book club", "for book club", 2, frozenset()),
    ("coffee date", "for a coffee date", 2, frozenset()),
    ("museum day", "for a museum visit", 2, frozenset()),
    ("wine tasting", "for a wine tasting", 3, frozenset()),
    ("boat day", "for a day on a boat", 3, frozenset({"hot"})),
    ("cabin weekend", "for a cabin weekend", 2, frozenset({"cold"})),
    ("honeymoon", "for a honeymoon", 3, frozenset({"hot"})),
    ("work from home", "for working from home", 1, frozenset()),
    ("house party", "for a house party", 2, frozenset()),
    ("club night", "for a night out clubbing", 3, frozenset()),
    ("theater night", "for the theater", 4, frozenset()),
    (None, "for meeting the parents", 3, frozenset()),
    ("snowy day", "for a snowy day", 2, frozenset({"cold", "snow"})),
    ("heatwave", "for a heatwave", 2, frozenset({"hot"})),
    ("campus", "for a day on campus", 2, frozenset()),
    ("dinner party", "for a dinner party", 4, frozenset()),
    ("sunday errands", "for running sunday errands", 1, frozenset()),
]

_STYLE_OCCASION_TEMPLATES = [
    _tpl("compound", "{style} {occasion} outfit"),
    _tpl("compound", "{style} {occasion} look"),
    _tpl("prep", "{style} outfit {prep}"),
    _tpl("prep", "{style} outfit ideas {prep}"),
    _tpl("dress", "how to dress {dress} {prep}"),
    _tpl("ideas", "{occasion} outfit ideas, {style} style"),
    _tpl("ideas", "{occasion} look with a {style} twist"),
]

_OCCASION_TEMPLATES = [
    _tpl("wear", "what to wear {prep}"),
    _tpl("ideas", "{occasion} outfit ideas"),
    _tpl("ideas", "{occasion} outfit inspiration"),
    _tpl("perfect", "the perfect outfit {prep}"),
]

_SEASONS = ["spring", "summer", "fall", "winter"]
_ALL_SEASONS = frozenset(_SEASONS)

# (event, seasons it happens in, whether "guest outfit" fits it)
_SEASONAL_EVENTS: list[tuple[str, frozenset[str], bool]] = [
    ("wedding", _ALL_SEASONS, True),
    ("outdoor concert", frozenset({"spring", "summer", "fall"}), False),
    ("picnic", frozenset({"spring", "summer", "fall"}), False),
    ("baby shower", _ALL_SEASONS, True),
    ("football game", frozenset({"fall", "winter"}), False),
    ("bonfire", frozenset({"fall", "winter"}), False),
    ("engagement party", _ALL_SEASONS, True),
    ("rehearsal dinner", _ALL_SEASONS, True),
    ("garden party", frozenset({"spring", "summer"}), True),
    ("birthday dinner", _ALL_SEASONS, False),
    ("graduation party", frozenset({"spring", "summer"}), True),
    ("beach wedding", frozenset({"spring", "summer"}), True),
    ("barn wedding", frozenset({"summer", "fall"}), True),
    ("family reunion", frozenset({"summer", "winter"}), False),
    ("farmers market", frozenset({"spring", "summer", "fall"}), False),
    ("brewery tour", _ALL_SEASONS, False),
]

_SEASON_EVENT_TEMPLATES = [
    _tpl("wear", "what to wear to a {season} {event}"),
    _tpl("ideas", "{season} {event} outfit ideas"),
    _tpl("guest", "{season} {event} guest outfit"),
]

_DESTINATIONS = [
    "paris", "tokyo", "lisbon", "new york", "london", "iceland", "bali", "rome", "copenhagen",
    "mexico city", "marrakech", "the amalfi coast", "seoul", "barcelona", "kyoto", "cape town",
    "the scottish highlands", "amsterdam", "santorini", "new orleans", "vienna", "buenos aires",
]
_TRAVEL_SEASONS = ["spring", "summer", "autumn", "winter"]

_TRAVEL_TEMPLATES = [
    _tpl("capsule", "capsule wardrobe for {destination} in {season}"),
    _tpl("pack", "what to pack for {destination} in {season}"),
    _tpl("wear", "what to wear in {destination} in {season}"),
    _tpl("outfits", "{season} outfits for a trip to {destination}"),
]

# Canonical phrasings that must be present, with the facet combination they belong to (so they
# share that combination's split). Added before the composed phrasings.
_FASHION_ANCHORS: list[tuple[str, tuple[str, ...], str]] = [
    ("style-occasion", ("bohemian", "festival"), "bohemian festival outfit"),
    ("style-occasion", ("minimalist", "office"), "minimalist office look"),
    ("style-occasion", ("old money", "wedding guest"), "old money wedding guest outfit"),
    ("style-occasion", ("streetwear", "concert"), "streetwear concert outfit"),
    ("occasion", ("job interview",), "what to wear for a job interview"),
    ("season-event", ("winter", "wedding"), "what to wear to a winter wedding"),
]

_FASHION_FREESTANDING = [
    "capsule wardrobe for a weekend in paris",
    "outfit for a rooftop party in july",
    "outfit for a sunday farmers market run",
    "one carry-on bag for two weeks in europe",
    "elevated basics for everyday wear",
    "effortless outfits for hot humid days",
    "rainy day outfit that still looks polished",
    "outfit that works from desk to dinner",
    "transitional outfits for early spring",
    "cozy layers for a chilly bonfire night",
    "budget-friendly wedding guest outfit",
    "coordinated outfits for a family photo shoot",
    "comfy outfit for a full day at disneyland",
    "dressing up jeans for a night out",
    "work wardrobe for a first corporate job",
    "outfits for a long weekend in the mountains",
    "easy halloween costume from your own closet",
    "all-white outfit for a summer party",
    "chic maternity outfit for the office",
    "moody winter layers in earth tones",
    "pastel spring outfit for easter brunch",
    "sustainable thrifted outfit for everyday",
    "breathable linen outfits for a humid city",
    "statement coat to elevate a simple outfit",
    "outfit for a long-haul flight to tokyo",
    "outfit for a gig at a dive bar",
    "dressy but comfortable outfit for a long wedding",
    "what to wear to a tech conference",
    "outfit for a day of sightseeing in rome",
    "after-work drinks outfit with sneakers",
    "casual friday outfit that isn't sloppy",
    "glamorous outfit for a vegas weekend",
    "rainproof outfit for a day in london",
    "layered outfit for a windy coastal walk",
    "outfit for a picnic at a vineyard",
    "light packing list for a backpacking trip",
    "retro bowling night outfit",
    "first day at a new job outfit",
    "polished top for video calls at home",
    "street style look for fashion week",
    "outfits with a pop of red",
    "neutral wardrobe staples for fall",
    "leather jacket outfits for spring evenings",
    "lightweight layers for a safari trip",
    "festival outfit that survives rain and mud",
    "apres-ski outfit for a cozy lodge evening",
    "what to wear to a book launch",
    "sunset dinner in tuscany outfit",
    "outfits for a girls trip to miami",
    "stylish outfit for walking all day",
    "polished outfit for a parent-teacher conference",
    "jewel-tone outfits for the holidays",
    "oversized blazer outfits for everyday",
    "quirky outfit for a vintage fair",
    "garden formal dress code ideas",
    "cocktail attire for a rooftop wedding",
    "monochrome beige outfit for spring",
    "outfit for a game night with friends",
    "outfit for a sunrise hot air balloon ride",
    "chic rain boots outfit",
    "outfit for a lunch date at a museum",
    "outfit ideas for a christmas market visit",
    "warm but stylish outfit for a football game",
    "look for a night at a jazz club",
    "what to wear to a pottery class",
    "outfit for a spa weekend getaway",
    "effortless look for a summer in the hamptons",
    "matching sets for a tropical getaway",
]


def _fashion() -> list[_Record]:
    b = _Builder("fashion")
    for family, names, text in _FASHION_ANCHORS:
        b.add(text, _key(family, names), strict=True)
    for text in _FASHION_FREESTANDING:
        b.add(text, f"free:{normalize(text)}", strict=True)

    def style_fits(s, o) -> bool:
        return s[1] <= o[2] <= s[2] and not (s[3] & o[3])

    for s, o in _pairs("fashion", "style-occasion", _STYLES, _OCCASIONS, style_fits, rate=0.27):
        fields = {"style": s[0], "dress": s[0] if s[4] else None, "occasion": o[0], "prep": o[1]}
        b.compose("style-occasion", (s[0], o[0] or o[1]), fields, _STYLE_OCCASION_TEMPLATES, second_rate=0.3)

    for o in _OCCASIONS:
        b.compose("occasion", (o[0] or o[1],), {"occasion": o[0], "prep": o[1]}, _OCCASION_TEMPLATES,
                  second_rate=0.4)

    seasons = [(s,) for s in _SEASONS]
    for ev, season in _pairs("fashion", "season-event", _SEASONAL_EVENTS, seasons,
                             lambda e, s: s[0] in e[1], rate=0.8):
        fields = {"season": season[0], "event": ev[0]}
        templates = [t for t in _SEASON_EVENT_TEMPLATES if ev[2] or t.group != "guest"]
        b.compose("season-event", (season[0], ev[0]), fields, templates, second_rate=0.3)

    for d, season in _pairs("fashion", "travel", [(d,) for d in _DESTINATIONS], [(s,) for s in _TRAVEL_SEASONS],
                            lambda d, s: True, rate=0.45):
        b.compose("travel", (d[0], season[0]), {"destination": d[0], "season": season[0]}, _TRAVEL_TEMPLATES,
                  second_rate=0.25)
    return b.records


# ---------------------------------------------------------------------------------------------
# Music facets
# ---------------------------------------------------------------------------------------------

# (mood, energy 1 calm .. 5 intense, valence -1 sad/dark, 0 neutral, 1 bright)
_MOODS: list[tuple[str, int, int]] = [
    ("melancholy", 2, -1), ("upbeat", 4, 1), ("dreamy", 2, 0), ("nostalgic", 2, 0), ("chill", 2, 0),
    ("angry", 5, -1), ("romantic", 2, 1), ("euphoric", 5, 1), ("moody", 2, -1), ("cozy", 1, 1),
    ("energetic", 5, 1), ("mellow", 1, 0), ("bittersweet", 2, -1), ("hopeful", 3, 1), ("feel-good", 4, 1),
    ("dark", 3, -1), ("sunny", 4, 1), ("groovy", 4, 1), ("peaceful", 1, 1), ("wistful", 2, -1),
    ("confident", 4, 1), ("rebellious", 4, 0), ("sentimental", 2, 0), ("laid-back", 2, 1), ("intense", 5, 0),
    ("ethereal", 1, 0), ("sultry", 2, 1), ("playful", 3, 1), ("triumphant", 4, 1), ("introspective", 2, 0),
    ("heartbroken", 2, -1), ("carefree", 3, 1), ("hazy", 2, 0), ("cinematic", 3, 0), ("calm", 1, 1),
    ("empowering", 4, 1), ("soulful", 3, 0), ("brooding", 3, -1),
]

# (compound form or None, noun phrase after "for", lowest energy, highest energy, moods it does not suit)
_SAD = frozenset(m for m, _, v in _MOODS if v < 0)
_ACTIVITIES: list[tuple[str | None, str, int, int, frozenset[str]]] = [
    ("rainy sunday", "a rainy sunday", 1, 3, frozenset()),
    ("late night drive", "a late night drive", 1, 4, frozenset()),
    ("workout", "a workout", 4, 5, frozenset()),
    ("morning run", "a morning run", 3, 5, frozenset({"rebellious"})),
    ("study session", "studying", 1, 3, frozenset({"heartbroken", "sultry", "romantic"})),
    ("dinner party", "a dinner party", 2, 4, _SAD - {"moody"}),
    ("road trip", "a road trip", 2, 5, frozenset({"heartbroken"})),
    ("coffee shop", "a coffee shop", 1, 3, frozenset({"heartbroken", "dark"})),
    ("summer bbq", "a summer bbq", 3, 5, _SAD | {"intense"}),
    ("breakup", "getting over a breakup", 1, 5,
     frozenset({"romantic", "cozy", "sunny", "euphoric", "playful", "sultry", "peaceful", "calm", "groovy",
                "laid-back", "carefree"})),
    ("cooking", "cooking dinner", 2, 4, _SAD),
    ("cleaning", "cleaning the house", 3, 5, _SAD),
    ("house party", "a house party", 4, 5, _SAD),
    ("yoga", "yoga", 1, 2, _SAD),
    ("bedtime", "falling asleep", 1, 2, _SAD),
    ("sunset", "watching the sunset", 1, 3, frozenset({"dark", "brooding"})),
    ("beach day", "a beach day", 2, 4, _SAD),
    ("deep focus", "deep focus at work", 1, 3, frozenset({"heartbroken", "sultry", "romantic", "playful"})),
    ("morning commute", "the morning commute", 2, 4, frozenset()),
    ("gaming", "a gaming session", 3, 5, frozenset({"heartbroken"})),
    ("wedding reception", "a wedding reception", 3, 5, _SAD | {"rebellious", "intense"}),
    ("christmas morning", "christmas morning", 1, 3, _SAD),
    ("autumn walk", "an autumn walk", 1, 3, frozenset()),
    ("night in", "a quiet night in", 1, 2, frozenset()),
    ("pregame", "getting ready to go out", 4, 5, _SAD),
    ("reading", "reading", 1, 2, frozenset({"sultry"})),
    ("painting", "painting", 1, 3, frozenset()),
    ("hiking", "a long hike", 2, 4, frozenset({"heartbroken", "sultry"})),
    ("night walk", "a night walk", 1, 3, frozenset()),
    ("train ride", "a long train ride", 1, 3, frozenset()),
    ("bubble bath", "a bubble bath", 1, 2, _SAD),
    ("rainy night", "a rainy night", 1, 3, frozenset()),
    ("sunday morning", "a lazy sunday morning", 1, 3, _SAD),
    ("golden hour", "golden hour", 1, 3, frozenset({"dark", "brooding"})),
    ("date night", "date night", 2, 3, _SAD | {"rebellious"}),
    ("snowy day", "a snowy day", 1, 3, frozenset()),
    ("pool party", "a pool party", 4, 5, _SAD),
    ("3am", "3am thoughts", 1, 3, frozenset({"sunny", "playful", "carefree"})),
    ("campfire", "a campfire", 1, 3, frozenset()),
    ("getting ready", "getting ready in the morning", 3, 4, _SAD),
]

_MOOD_ACTIVITY_TEMPLATES = [
    _tpl("compound", "{mood} {activity} playlist"),
    _tpl("compound", "{mood} {activity} mix"),
    _tpl("for", "{mood} songs for {np}"),
    _tpl("for", "{mood} music for {np}"),
    _tpl("vibes", "{mood} vibes for {np}"),
    _tpl("a", "a {mood} playlist for {np}"),
]

_ACTIVITY_TEMPLATES = [
    _tpl("for", "songs for {np}"),
    _tpl("for", "music for {np}"),
    _tpl("compound", "{activity} playlist"),
    _tpl("perfect", "the perfect playlist for {np}"),
]

# Eras and genres used as a mood, with the settings they are played in.
_ERAS = [
    "60s", "70s", "80s", "90s", "2000s", "2010s", "motown", "disco", "britpop", "classic rock",
    "old school hip hop", "90s r&b", "pop punk", "yacht rock", "city pop", "new wave", "indie rock",
    "country", "latin pop", "k-pop", "funk", "soul", "reggae", "emo", "swing",
]
# (era or genre, settings it does not suit)
_ERA_AVOID = {
    "yacht rock": {"workout"}, "swing": {"workout"}, "city pop": {"workout"}, "disco": {"slow dance"},
    "old school hip hop": {"slow dance"}, "emo": {"dinner party", "cooking", "summer"},
    "pop punk": {"dinner party", "slow dance"}, "classic rock": {"slow dance"},
}
_ERA_SETTINGS = [
    ("throwback party", "{era} throwback party"),
    ("road trip", "{era} road trip songs"),
    ("karaoke", "{era} karaoke night"),
    ("dance party", "{era} dance party"),
    ("workout", "{era} workout mix"),
    ("sing-along", "{era} sing-along classics"),
    ("slow dance", "{era} slow dance songs"),
    ("summer", "{era} summer anthems"),
    ("dinner party", "{era} songs for a dinner party"),
    ("cooking", "{era} tunes for cooking together"),
]

_TEXTURES = [
    "mellow acoustic", "lo-fi", "jazzy", "ambient", "soft piano", "dreamy shoegaze", "warm soul",
    "bossa nova", "classical", "gentle folk", "smooth jazz", "downtempo", "chillhop", "neo-soul",
]
# (time, noun phrase after "for", whether "{texture} {time}" reads well on its own)
_TIMES = [
    ("evening", "a quiet evening", True), ("morning", "a slow morning", True),
    ("sunday brunch", "sunday brunch", True), ("dinner", "a cozy dinner", False),
    ("study night", "a late study night", True), ("late night", "late nights", False),
    ("afternoon", "a lazy afternoon", True), ("rainy morning", "a rainy morning", True),
]
_TEXTURE_TEMPLATES = [
    _tpl("bare", "{texture} {bare_time}"),
    _tpl("bare", "{texture} {time} playlist"),
    _tpl("for", "{texture} music for {np}"),
]

_MUSIC_ANCHORS: list[tuple[str, tuple[str, ...], str]] = [
    ("activity", ("rainy sunday",), "rainy sunday playlist"),
    ("mood-activity", ("upbeat", "morning run"), "upbeat songs for a morning run"),
    ("mood-activity", ("dreamy", "late night drive"), "dreamy late night drive playlist"),
    ("activity", ("dinner party",), "songs for a dinner party"),
    ("era-setting", ("90s", "throwback party"), "90s throwback party"),
    ("texture-time", ("mellow acoustic", "evening"), "mellow acoustic evening"),
]

_MUSIC_FREESTANDING = [
    "songs to cry to in the shower",
    "slow sunday morning with coffee",
    "soundtrack for main character energy",
    "songs that feel like the end of summer",
    "music for a cozy cabin in the snow",
    "songs for a long drive along the coast",
    "background music for a first date dinner",
    "songs to dance alone in your kitchen",
    "music for writing a novel",
    "playlist for a sunrise hike",
    "songs that sound like falling in love",
    "songs to feel like a movie villain",
    "songs for a cathartic scream in the car",
    "lullabies for grown-ups",
    "songs that feel like a warm hug",
    "music for a rainy bookshop afternoon",
    "songs for the last day of school",
    "music for a candlelit dinner",
    "feel-good songs for a bad day",
    "songs for wandering a new city",
    "playlist for a picnic in the park",
    "songs for a midnight swim",
    "songs to get out of a slump",
    "music for a stargazing night",
    "songs for decorating the christmas tree",
    "music for baking on a fall afternoon",
    "songs that feel like a coming-of-age movie",
    "playlist for a beach bonfire",
    "music for a productive monday morning",
    "songs for a long flight",
    "gentle music for a baby's nap",
    "songs to hype you up before an exam",
    "slow dancing in the living room",
    "songs to blast with the windows down",
    "music that sounds like a foggy forest",
    "songs for missing someone far away",
    "playlist for a backyard wedding",
    "music for a vintage cocktail bar",
    "songs for a sunday reset",
    "music for a moonlit walk",
    "celebration songs after a big win",
    "songs for reconnecting with old friends",
    "music to paint your room to",
    "playlist for a tropical vacation",
    "songs to fall back in love with life",
    "music for the first snowfall",
    "songs for a long goodbye",
    "instrumental background music for a restaurant",
    "songs for a spring cleaning spree",
    "music for journaling at night",
    "songs for driving through the desert",
    "music that feels like a wes anderson film",
    "dance songs for a wedding after-party",
    "songs for a sleepover with friends",
    "music for a quiet morning at the lake",
    "anthems for a girls night out",
    "songs for a rooftop sunset party",
    "music for staring out a train window",
    "songs to celebrate a new job",
    "calming music for a stressful day",
    "music for an art gallery opening",
    "songs to help you feel brave",
    "summer songs that sound like a road trip",
]


def _music() -> list[_Record]:
    b = _Builder("music")
    for family, names, text in _MUSIC_ANCHORS:
        b.add(text, _key(family, names), strict=True)
    for text in _MUSIC_FREESTANDING:
        b.add(text, f"free:{normalize(text)}", strict=True)

    def mood_fits(m, a) -> bool:
        return a[2] <= m[1] <= a[3] and m[0] not in a[4]

    for m, a in _pairs("music", "mood-activity", _MOODS, _ACTIVITIES, mood_fits, rate=0.4):
        fields = {"mood": m[0], "activity": a[0], "np": a[1]}
        b.compose("mood-activity", (m[0], a[0] or a[1]), fields, _MOOD_ACTIVITY_TEMPLATES, second_rate=0.3)

    for a in _ACTIVITIES:
        b.compose("activity", (a[0] or a[1],), {"activity": a[0], "np": a[1]}, _ACTIVITY_TEMPLATES, second_rate=0.4)

    def era_fits(e, s) -> bool:
        return s[0] not in _ERA_AVOID.get(e[0], ())

    for e, s in _pairs("music", "era-setting", [(e,) for e in _ERAS], _ERA_SETTINGS, era_fits, rate=0.3):
        b.compose("era-setting", (e[0], s[0]), {"era": e[0]}, [_tpl("setting", s[1])], second_rate=0.0)

    for t, tm in _pairs("music", "texture-time", [(t,) for t in _TEXTURES], _TIMES, lambda t, tm: True, rate=0.4):
        fields = {"texture": t[0], "time": tm[0], "bare_time": tm[0] if tm[2] else None, "np": tm[1]}
        b.compose("texture-time", (t[0], tm[0]), fields, _TEXTURE_TEMPLATES, second_rate=0.2)
    return b.records


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[], list[_Record]]] = {"fashion": _fashion, "music": _music}
DOMAINS: tuple[str, ...] = tuple(_BUILDERS)


@lru_cache(maxsize=None)
def _records(domain: str) -> tuple[_Record, ...]:
    """Every intent of `domain` with its facet key, in a fixed order."""
    if domain not in _BUILDERS:
        raise DataError(f"unknown intent domain {domain!r}; known domains: {', '.join(DOMAINS)}")
    return tuple(_BUILDERS[domain]())


def intents(domain: str) -> list[str]:
    """The abstract intent queries of `domain` ("fashion" or "music"): distinct, lowercase, 2-8 words, fixed order."""
    return [r.text for r in _records(domain)]


def _split_of_keys(domain: str, val_frac: float, test_frac: float) -> dict[str, str]:
    """Facet key -> split.

    Keys are ranked by a SHA-256 hash of (domain, key) and laid end to end, each as long as its
    number of intents; a key whose midpoint falls in the first test_frac of that line is test, the
    next val_frac is val, the rest is train. The split sizes thus hit the fractions to within half a
    combination (a plain hash threshold would miss them by a few points by chance), a larger
    test_frac only moves keys into test, and editing the facet lists moves only keys near the cuts.
    """
    sizes = Counter(r.key for r in _records(domain))
    total = sum(sizes.values())
    test_cut, val_cut = test_frac * total, (test_frac + val_frac) * total
    out: dict[str, str] = {}
    start = 0
    for key in sorted(sizes, key=lambda k: (_unit("split", domain, k), k)):
        mid = start + sizes[key] / 2
        out[key] = "test" if mid < test_cut else "val" if mid < val_cut else "train"
        start += sizes[key]
    return out


def split_intents(domain: str, val_frac: float = 0.1, test_frac: float = 0.2) -> dict[str, list[str]]:
    """{"train", "val", "test"} lists partitioning intents(domain), each in intents() order.

    An intent's split is decided by a SHA-256 hash of its facet key (the facet combination it was
    composed from, or its own text if freestanding), never by Python's salted hash(), so it is the
    same on every call and run, and all phrasings of one combination share a split: val and test
    combinations are never seen in train.
    """
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"split_intents: {name}={frac!r} must be in [0, 1)")
    if val_frac + test_frac >= 1.0:
        raise ConfigError(f"split_intents: val_frac + test_frac = {val_frac + test_frac!r} leaves no train intents")
    split_of = _split_of_keys(domain, val_frac, test_frac)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for r in _records(domain):
        out[split_of[r.key]].append(r.text)
    return out
