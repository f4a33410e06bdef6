"""NITF data extension segments (DES) holding XML: found in GDAL's metadata, written back.

GDAL's NITF driver lists an image's DES in the ``xml:DES`` metadata domain: the subheader
fields by name, and the data either as parsed XML (``xml_content``) or base64. A DES is written
into a new NITF with the creation option ``DES=<DESID>=<subheader from DESVER on + data>``,
backslash-escaped (GDAL's ``CPLES_BackslashQuotable``). Pure: strings in, strings out.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# The XML DES names a SICD is stored under (the second one before SICD 1.0).
SICD_DES_NAMES = ("XML_DATA_CONTENT", "SICD_XML")

# NITF 2.1 DES subheader fields after DESID, up to the user-defined subheader, with widths.
_HEADER_FIELDS = (
    ("DESVER", 2), ("DECLAS", 1), ("DESCLSY", 2), ("DESCODE", 11), ("DESCTLH", 2),
    ("DESREL", 20), ("DESDCTP", 2), ("DESDCDT", 8), ("DESDCXM", 4), ("DESDG", 1),
    ("DESDGDT", 8), ("DESCLTX", 43), ("DESCATP", 1), ("DESCAUT", 40), ("DESCRSN", 1),
    ("DESSRDT", 8), ("DESCTLN", 15),
)  # fmt: skip
_HEADER_DEFAULTS = {"DESVER": "01", "DECLAS": "U"}
# XML_DATA_CONTENT user-defined subheader: DESSHLPG (the corner polygon) and where it starts.
_LPG_OFFSET, _LPG_LENGTH = 283, 125
_FULL_USER_HEADER = 773


@dataclass(frozen=True, slots=True)
class XmlDes:
    """One XML DES: its name, subheader fields, user-defined subheader and XML text."""

    name: str
    fields: tuple[tuple[str, str], ...]
    user_header: str
    xml: str

    def root_name(self) -> str:
        """Local name of the XML's root element (``SICD`` for a SICD)."""
        return _local(ET.fromstring(self.xml).tag)

    def creation_option(self, xml: str, corners: str | None = None) -> str:
        """The ``DES`` creation option writing this DES with ``xml`` as its data.

        Args:
            xml: The data to write (e.g. the XML updated for a chip).
            corners: A new DESSHLPG (125 characters), when the user subheader has one.
        """
        values = dict(self.fields)
        header = "".join(
            (values.get(name) or _HEADER_DEFAULTS.get(name, "")).ljust(width)[:width]
            for name, width in _HEADER_FIELDS
        )
        user = self.user_header
        if corners is not None and len(user) == _FULL_USER_HEADER:
            end = _LPG_OFFSET + _LPG_LENGTH
            user = user[:_LPG_OFFSET] + corners.ljust(_LPG_LENGTH)[:_LPG_LENGTH] + user[end:]
        content = f"{header}{len(user):04d}{user}{xml}"
        return f"{self.name}={backslash_quote(content)}"


def backslash_quote(text: str) -> str:
    """Escape like GDAL's ``CPLES_BackslashQuotable`` (backslash, quote, newline, NUL)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\0", "\\0")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def xml_text(root: ET.Element) -> str:
    """Serialise an element with its own namespace as the default one (no ``ns0:`` prefixes).

    ElementTree's ``default_namespace`` refuses unqualified attributes, which SICD has
    (``index``, ``exponent1``), so the prefix it picks for the root's namespace is removed.
    """
    text = ET.tostring(root, encoding="unicode").strip()
    found = re.match(r"<([A-Za-z_][\w.-]*):", text)
    # An element without a namespace would fall into the default one: keep the prefixes then.
    if found is None or any(not element.tag.startswith("{") for element in root.iter()):
        return text
    prefix = re.escape(found.group(1))
    text = re.sub(rf"(</?){prefix}:", r"\1", text)
    return re.sub(rf"\sxmlns:{prefix}=", " xmlns=", text, count=1)


def _des_xml(data: ET.Element) -> str | None:
    """The XML text of a DESDATA field: parsed by GDAL, or base64 (older GDAL, odd XML)."""
    content = data.find("xml_content")
    if content is not None and len(content):
        return xml_text(content[0])
    encoded = data.get("value")
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _read_des(des: ET.Element) -> XmlDes | None:
    fields: list[tuple[str, str]] = []
    user_header, xml = "", None
    for field in des.findall("field"):
        name, value = field.get("name", ""), field.get("value", "")
        if name == "DESSHF":
            user_header = value
        elif name == "DESDATA":
            xml = _des_xml(field)
        else:
            fields.append((name, value))
    if xml is None:
        return None
    declared = dict(fields).get("DESSHL", "")
    # GDAL trims trailing blanks of field values; the subheader length says how many there were.
    width = int(declared) if declared.isdigit() else len(user_header)
    return XmlDes(des.get("name", ""), tuple(fields), user_header.ljust(width), xml)


def find_xml_des(xml_des: str, names: tuple[str, ...], root: str) -> XmlDes | None:
    """The first DES named one of ``names`` whose XML root element is ``root``.

    Args:
        xml_des: GDAL's ``xml:DES`` metadata of a NITF.
        names: Acceptable DESIDs.
        root: Local name of the XML root element (namespaces ignored).
    """
    try:
        listing = ET.fromstring(xml_des)
    except ET.ParseError:
        return None
    for des in listing.iter("des"):
        if des.get("name") not in names:
            continue
        found = _read_des(des)
        if found is None:
            continue
        try:
            if found.root_name() == root:
                return found
        except ET.ParseError:
            continue
    return None
