"""E-mail messages (.eml, RFC 5322) read with the standard library's ``email`` package.

Subject, from, to and date become document metadata (filterable) and a header section (searchable);
the body is the text part, else the HTML part. Attachments of supported types are parsed and
indexed as sections of the message under "Attachment: <name>" (not as documents of their own);
an attachment Stratus cannot read is named in a section so it is never dropped silently.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import FormatLimits
from stratus.models import ParsedDocument, Section

_MAX_DEPTH = 3


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header is not worth failing the message
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def parse_eml(data: bytes, filename: str, limits: FormatLimits, depth: int = 0) -> ParsedDocument:
    """Headers as metadata, the text body, and supported attachments as sections."""
    from stratus.ingest.parsing import _parse_html, normalize_text, parse_document

    if depth > _MAX_DEPTH:
        raise PermanentError("e-mail nests attached messages too deeply")
    message = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(message, EmailMessage) or not (message.keys() or message.get_payload()):
        raise PermanentError("e-mail message has no headers or body")
    meta = {k: _header(message, k.title()) for k in ("subject", "from", "to", "date")}
    metadata = {f"email_{k}": v for k, v in meta.items() if v}
    header_text = "\n".join(f"{k.title()}: {v}" for k, v in meta.items() if v)
    sections = [Section(heading_path=["Message"], text=header_text)] if header_text else []

    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        try:
            content = body.get_content()
        except (LookupError, ValueError) as exc:
            raise PermanentError(f"e-mail body could not be decoded: {exc}") from exc
        if body.get_content_type() == "text/html":
            raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            sections += [
                Section(heading_path=["Message"], text=s.text) for s in _parse_html(raw, "body.html").sections
            ]
        elif isinstance(content, str):
            sections.append(Section(heading_path=["Message"], text=normalize_text(content, keep_indent=True)))

    for index, part in enumerate(message.iter_attachments()):
        name = part.get_filename() or f"attachment-{index + 1}"
        label = f"Attachment: {name}"
        if index >= limits.eml_max_attachments:
            sections.append(
                Section(
                    heading_path=[label],
                    text=f"{label} not indexed: more than {limits.eml_max_attachments} attachments",
                )
            )
            continue
        try:
            if part.get_content_type() == "message/rfc822":
                inner = parse_eml(part.get_content().as_bytes(), name, limits, depth + 1)
            else:
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    raise PermanentError("attachment has no content")
                if name.lower().endswith(".eml"):
                    inner = parse_eml(payload, name, limits, depth + 1)
                else:
                    inner = parse_document(payload, name, part.get_content_type())
        except PermanentError as exc:
            sections.append(Section(heading_path=[label], text=f"{label} not indexed: {exc}"))
            continue
        for section in inner.sections:
            sections.append(section.model_copy(update={"heading_path": [label, *section.heading_path]}))
    return ParsedDocument(title=meta["subject"], sections=sections, metadata=metadata)
