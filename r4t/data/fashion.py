"""Fashion catalogs from Polyvore-style items and outfits.

Decisions (documented in docs/stages.md (Data)):
- item text = the item's name; items with an empty name use their fine category name instead;
- `category` = a coarse group (top, bottom, dress, ...) derived from the fine category (kept as
  `fine_category`); the generic "Clothing"/"Accessories"/"Jewelry" categories are resolved from the name;
- an outfit becomes a reference set only if its title is meaningful (not empty, not "Untitled #12", has
  letters) and it is an outfit rather than a collage: its description does not call it an art, home decor or
  beauty collage, and at least 3 of its items are wearable;
- outfits are split train/val/test 80/10/10 by a stable hash of the normalized title.
"""

from __future__ import annotations

import re
from typing import Iterable

import pyarrow as pa

from r4t.data.build import assemble, clean_text, normalize_title, oar_query_rows, stable_split
from r4t.data.dataset import Dataset
from r4t.data.raw import RawItem, RawOutfit

WEARABLE_GROUPS = ("top", "bottom", "dress", "outerwear", "shoes", "bag", "jewelry", "accessory", "swimwear",
                   "intimates")

# First match wins, so the specific patterns ("dress shoes", "bath & body", "napkin rings") come first.
_GROUP_PATTERNS: list[tuple[str, str]] = [
    ("other", r"tech accessor|electronics|sports & outdoors"),
    ("home", r"napkin ring|flatware|bath towel|bath rug|bath accessor|shower|beach towel|tablecloth|table linen|"
             r"dresser|home fragrance|jewelry storage|patio|office accessor|bed accessor|fireplace"),
    ("beauty", r"bath & body|makeup|skincare|skin care|fragrance|beauty|nail|manicure|\blip|mascara|eyeliner|eyeshadow|"
               r"eyelash|concealer|foundation|powder|blush|bronzer|moisturi|cleanser|toner|face|sun care|"
               r"deodorant|shaving|grooming|haircare|oral care|tweezer|sharpener|brushes|blow dryer|hair (care|color|"
               r"shampoo|conditioner|styling)|styling product|hair removal|eye care|perfume|lotion"),
    ("shoes", r"\bshoes?\b|boots?\b|booties|pumps?\b|sandals?|\bflats\b|flip flops|sneakers?|slippers|loafers|"
              r"oxfords|clogs|heels|mules|espadrilles|stilettos?"),
    ("swimwear", r"swim|bikini|cover-up|one piece"),
    ("intimates", r"\bbras?\b|panties|intimates|sleepwear|pajama|robes?\b|chemise|shapewear|underwear|"
                  r"camisoles|lingerie"),
    ("dress", r"\bdress(es)?\b(?!\s*(pants|shirts?))|gown|jumpsuit|romper"),
    ("outerwear", r"outerwear|coats?\b|\bsuits?\b|jackets?|vests?\b|blazers?|sportcoat|parka|trench"),
    ("bottom", r"skirts?\b|jeans|pants|shorts|leggings|capri|trousers|joggers"),
    ("top", r"\btops?\b|tunic|blouse|cardigan|sweater|t-shirt|tee\b|shirts?\b|tank|sweatshirt|hoodie|polo|"
            r"pullover|bodysuit|crop"),
    ("bag", r"bags?\b|clutch|tote|luggage|wallet|backpack|briefcase|purse|satchel|crossbody"),
    ("jewelry", r"jewel|necklace|earring|\brings?\b|bracelet|bangle|brooch|charm|pendant|watch|cuff link|"
                r"choker"),
    ("accessory", r"accessor|belts?\b|gloves|\bhats?\b|\bcaps?\b|beanie|\bties\b|sunglass|eyewear|eyeglass|"
                  r"umbrella|scar(f|ves)|hosiery|socks|tights|suspenders|handkerchief|headband|key ring|money clip"),
    ("home", r"furniture|sofa|chair|table|ottoman|barstool|\bbeds?\b|bedding|dresser|storage|shel|bookcase|"
             r"entertainment|lighting|lamp|light|rug|vase|candle|frame|mirror|pillow|fabric|flooring|decor|"
             r"hammock|hardware|patio|bench|fountain|sheet|wallpaper|blanket|duvet|quilt|comforter|curtain|"
             r"window|kitchen|bakeware|cutlery|appliance|cookware|drinkware|serveware|dinnerware|screen|"
             r"cabinet|teapot|stool|desk|clock|armoire|nightstand|sideboard|\bbath\b|garden|outdoor|apron|"
             r"children's|nursery|fireplace|home|paint|\bfans?\b|bar tools|food storage|bedspread"),
]
_COMPILED = [(group, re.compile(p)) for group, p in _GROUP_PATTERNS]
_GENERIC_CATEGORIES = {"clothing", "men's clothing", "accessories", "men's accessories", "jewelry", "men's fashion",
                       "none", "activewear", "men's activewear", "juniors", "kids", "boys", "girls"}


def _match_group(text: str) -> str | None:
    text = text.casefold()
    for group, pattern in _COMPILED:
        if pattern.search(text):
            return group
    return None


def coarse_group(fine_category: str, name: str = "") -> str:
    """Coarse group of an item: from its fine category, or from its name where the category is generic."""
    if fine_category.casefold() in _GENERIC_CATEGORIES:
        return _match_group(name) or _match_group(fine_category) or "other"
    return _match_group(fine_category) or "other"


_NOISE_TITLE = re.compile(r"^\s*untitled\s*(#\s*\d+)?\s*$", re.IGNORECASE)
_COLLAGE_DESC = re.compile(r"^\s*an? (art|home decor|beauty) collage\b", re.IGNORECASE)
MIN_WEARABLE_ITEMS = 3


def is_noise_title(title: str) -> bool:
    return bool(_NOISE_TITLE.match(title)) or sum(ch.isalpha() for ch in title) < 2


def is_outfit(outfit: RawOutfit, group_of: dict[str, str]) -> bool:
    """An outfit, not a collage: not described as one, and at least MIN_WEARABLE_ITEMS wearable items."""
    if _COLLAGE_DESC.match(outfit.description or ""):
        return False
    wearable = sum(group_of.get(i) in WEARABLE_GROUPS for i in outfit.members)
    return wearable >= MIN_WEARABLE_ITEMS


def build_fashion_dataset(name: str, items: Iterable[RawItem], outfits: Iterable[RawOutfit], seed: int = 0) -> Dataset:
    """Catalog = every item; reference sets = the outfits that pass the filters; queries = WSCR titles + OAR intents.

    `seed` salts the split hash; 0 reproduces the shipped splits.
    """
    item_rows, group_of = [], {}
    for item in items:
        if item.item_id in group_of:
            continue
        text = clean_text(item.name) or clean_text(item.category) or "item"
        group_of[item.item_id] = coarse_group(item.category, item.name)
        item_rows.append({"item_id": item.item_id, "text": text, "category": group_of[item.item_id],
                          "fine_category": item.category})
    set_rows, query_rows = [], []
    for outfit in outfits:
        title = clean_text(outfit.title)
        ids = [i for i in dict.fromkeys(outfit.members) if i in group_of]
        if not ids or is_noise_title(title) or not is_outfit(outfit, group_of):
            continue
        split = stable_split(normalize_title(title), salt=str(seed) if seed else "")
        set_rows.append({"set_id": outfit.set_id, "query": title, "item_ids": ids, "split": split})
        query_rows.append({"query_id": f"wscr-{outfit.set_id}", "text": title, "split": split, "task": "wscr",
                           "set_id": outfit.set_id})
    return assemble(name, item_rows, {"fine_category": pa.string()}, set_rows, query_rows + oar_query_rows("fashion"))
