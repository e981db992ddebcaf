"""E-mail messages (.eml, RFC 5322) read with the standard library's ``email`` package.

Subject, from, to and date become document metadata (filterable) and a header section (searchable);
the body is the text part, else the HTML part. Attachments are handed back with the message
(`ParsedDocument.attachments`): the fetch stage writes each beside the message in the inbox, where it
becomes a document of its own linked to the message (`pipeline/fetch.py`); where it cannot,
`stratus.ingest.parsing.fold_attachments` indexes them as sections of the message. Past the cap they
are named, never dropped.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import FormatLimits
from stratus.models import Attachment, ParsedDocument, Section


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header is not worth failing the message
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def parse_eml(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """Headers as metadata, the text body as sections, and the attachments (up to the cap) as files."""
    from stratus.ingest.html import parse_html
    from stratus.ingest.text import normalize_text

    message = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(message, EmailMessage) or not (message.keys() or message.get_payload()):
        raise PermanentError("e-mail message has no headers or body")
    meta = {k: _header(message, k.title()) for k in ("subject", "from", "to", "date")}
    metadata: dict[str, str | int | float | bool] = {f"email_{k}": v for k, v in meta.items() if v}
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
                Section(heading_path=["Message"], text=s.text) for s in parse_html(raw, "body.html").sections
            ]
        elif isinstance(content, str):
            sections.append(Section(heading_path=["Message"], text=normalize_text(content, keep_indent=True)))

    attachments: list[Attachment] = []
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
        if part.get_content_type() == "message/rfc822":
            inner = part.get_content()
            payload = inner.as_bytes() if hasattr(inner, "as_bytes") else None
            content_type = "message/rfc822"
            if not name.lower().endswith(".eml"):
                name = f"{name}.eml"
        else:
            payload = part.get_payload(decode=True)
            content_type = part.get_content_type()
        if not isinstance(payload, bytes) or not payload:
            sections.append(
                Section(heading_path=[label], text=f"{label} not indexed: attachment has no content")
            )
            continue
        attachments.append(Attachment(name=name, content_type=content_type, data=payload))
    if attachments:
        metadata["email_attachments"] = len(attachments)
        names = ", ".join(a.name for a in attachments)
        sections.append(Section(heading_path=["Attachments"], text=f"Attachments: {names}"))
    return ParsedDocument(
        title=meta["subject"], sections=sections, metadata=metadata, attachments=attachments
    )
