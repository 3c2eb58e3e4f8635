"""The fake ERP's operations: a request element in, a response element out (or an ErpFault).

Document/literal operations read and write elements in ``urn:retail:erp:types`` (see
``wsdl/erp-types.xsd``); rpc/literal operations read unqualified part elements under a wrapper in
``urn:retail:erp:legacy`` and answer ``<OperationResponse>`` with unqualified parts.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from lxml import etree

from connectors.soap_erp.fakeerp.state import ErpFault, ErpState

__all__ = ["DOC_OPERATIONS", "LEGACY_NS", "RPC_OPERATIONS", "TYPES_NS"]

TYPES_NS = "urn:retail:erp:types"
LEGACY_NS = "urn:retail:erp:legacy"
_T = f"{{{TYPES_NS}}}"

Handler = Callable[[ErpState, etree._Element], etree._Element]


def _text(element: etree._Element, path: str, *, ns: str = _T, required: bool = True) -> str:
    node = element
    for step in path.split("/"):
        found = node.find(f"{ns}{step}")
        if found is None:
            if required:
                raise ErpFault("client", f"{path} is missing", code="SCHEMA", field=path)
            return ""
        node = found
    return (node.text or "").strip()


def _decimal(text: str, field: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ErpFault("client", f"{field} is not a number: {text!r}", code="SCHEMA",
                       field=field) from None


def _number(value: Decimal) -> str:
    return format(value.normalize() if value == value.to_integral() else value, "f")


def _response(name: str, children: list[tuple[str, str]], ns: str = _T) -> etree._Element:
    root = etree.Element(f"{ns}{name}")
    for tag, text in children:
        etree.SubElement(root, f"{ns}{tag}").text = text
    return root


def post_stock_adjustment(state: ErpState, request: etree._Element) -> etree._Element:
    where = (_text(request, "Item/Material"), _text(request, "Item/Plant"),
             _text(request, "Item/StorageLocation"))
    doc, _ = state.post_movement(_text(request, "DocumentHeader/ExternalReference"), where,
                                 _text(request, "Item/MovementType"),
                                 _decimal(_text(request, "Item/Quantity"), "Quantity"))
    on_hand = state.query(*where)[0][1].on_hand
    return _response("PostStockAdjustmentResponse", [("DocumentNumber", doc.number),
                                                     ("OnHand", _number(on_hand))])


def create_sales_order(state: ErpState, request: etree._Element) -> etree._Element:
    value = Decimal(0)
    lines: dict[int, tuple[str, str, Decimal]] = {}
    for number, line in enumerate(request.findall(f"{_T}Line"), start=1):
        quantity = _decimal(_text(line, "Quantity"), "Quantity")
        value += quantity * _decimal(_text(line, "UnitPrice"), "UnitPrice")
        line_no = _text(line, "LineNo", required=False)
        lines[int(line_no) if line_no.isdigit() else number] = (
            _text(line, "Material"), _text(line, "Plant"), quantity)
    doc, _ = state.create_sales_order(_text(request, "ExternalReference"), value, lines)
    return _response("CreateSalesOrderResponse", [
        ("DocumentNumber", doc.number), ("NetValue", str(doc.value.quantize(Decimal("0.01"))))])


def reserve_stock(state: ErpState, request: etree._Element) -> etree._Element:
    where = (_text(request, "Material"), _text(request, "Plant"),
             _text(request, "StorageLocation"))
    doc, _ = state.reserve(_text(request, "ExternalReference"), where,
                           _decimal(_text(request, "Quantity"), "Quantity"))
    available = state.query(*where)[0][1].available
    return _response("ReserveStockResponse", [("DocumentNumber", doc.number),
                                              ("Available", _number(available))])


def release_reservation(state: ErpState, request: etree._Element) -> etree._Element:
    reservation = _text(request, "ReservationReference")
    doc, _ = state.release(_text(request, "ExternalReference"), reservation)
    where = state.reservations[reservation][0]
    available = state.query(*where)[0][1].available
    return _response("ReleaseReservationResponse", [("DocumentNumber", doc.number),
                                                    ("Available", _number(available))])


def cancel_sales_order_lines(state: ErpState, request: etree._Element) -> etree._Element:
    lines = [int((node.text or "0").strip()) for node in request.findall(f"{_T}LineNo")]
    doc, open_lines = state.cancel_lines(_text(request, "ExternalReference"),
                                         _text(request, "SalesOrderReference"), lines)
    return _response("CancelSalesOrderLinesResponse", [("DocumentNumber", doc.number),
                                                       ("OpenLines", str(open_lines))])


def query_stock(state: ErpState, request: etree._Element) -> etree._Element:
    rows = state.query(_text(request, "Material"), _text(request, "Plant"),
                       _text(request, "StorageLocation", required=False) or None)
    root = etree.Element(f"{_T}QueryStockResponse")
    for (material, plant, location), row in rows:
        stock = etree.SubElement(root, f"{_T}Stock")
        for tag, text in (("Material", material), ("Plant", plant),
                          ("StorageLocation", location), ("OnHand", _number(row.on_hand)),
                          ("Reserved", _number(row.reserved)),
                          ("Available", _number(row.available))):
            etree.SubElement(stock, f"{_T}{tag}").text = text
    return root


def find_document(state: ErpState, request: etree._Element) -> etree._Element:
    doc = state.find(_text(request, "ExternalReference"))
    root = etree.Element(f"{_T}FindDocumentResponse")
    if doc is not None:
        found = etree.SubElement(root, f"{_T}Document")
        for tag, text in (("DocumentNumber", doc.number), ("DocumentType", doc.type),
                          ("ExternalReference", doc.reference)):
            etree.SubElement(found, f"{_T}{tag}").text = text
    return root


def get_stock_changes(state: ErpState, request: etree._Element) -> etree._Element:
    since = int(_text(request, "SinceSequence"))
    changes, more = state.changes_since(since, max(1, min(int(_text(request, "MaxRows")), 5000)))
    root = etree.Element(f"{_T}GetStockChangesResponse")
    for c in changes:
        change = etree.SubElement(root, f"{_T}Change")
        for tag, text in (("Sequence", str(c.sequence)), ("Material", c.material),
                          ("Plant", c.plant), ("StorageLocation", c.location),
                          ("OnHand", _number(c.on_hand)), ("Available", _number(c.available)),
                          ("DocumentNumber", c.document), ("ChangedAt", c.at.isoformat())):
            etree.SubElement(change, f"{_T}{tag}").text = text
    last = changes[-1].sequence if changes else since
    etree.SubElement(root, f"{_T}LastSequence").text = str(last)
    etree.SubElement(root, f"{_T}HasMore").text = "true" if more else "false"
    return root


def get_price_changes(state: ErpState, request: etree._Element) -> etree._Element:
    since = int(_text(request, "SinceSequence"))
    changes, more = state.prices_since(since, max(1, min(int(_text(request, "MaxRows")), 5000)))
    root = etree.Element(f"{_T}GetPriceChangesResponse")
    for c in changes:
        change = etree.SubElement(root, f"{_T}Change")
        for tag, text in (("Sequence", str(c.sequence)), ("Material", c.material),
                          ("Plant", c.plant), ("StorageLocation", c.location),
                          ("Price", str(c.price.quantize(Decimal("0.01")))),
                          ("Currency", c.currency), ("ValidFrom", c.valid_from.isoformat())):
            etree.SubElement(change, f"{_T}{tag}").text = text
    etree.SubElement(root, f"{_T}LastSequence").text = str(changes[-1].sequence if changes
                                                           else since)
    etree.SubElement(root, f"{_T}HasMore").text = "true" if more else "false"
    return root


# -- rpc/literal (parts are unqualified) -----------------------------------------------------------
def _part(request: etree._Element, name: str) -> str:
    return _text(request, name, ns="")


def get_stock_level(state: ErpState, request: etree._Element) -> etree._Element:
    rows = state.query(_part(request, "material"), _part(request, "plant"),
                       _part(request, "storageLocation"))
    on_hand = sum((r.on_hand for _, r in rows), Decimal(0))
    available = sum((r.available for _, r in rows), Decimal(0))
    root = etree.Element(f"{{{LEGACY_NS}}}GetStockLevelResponse")
    etree.SubElement(root, "onHand").text = _number(on_hand)
    etree.SubElement(root, "available").text = _number(available)
    return root


def post_goods_movement(state: ErpState, request: etree._Element) -> etree._Element:
    where = (_part(request, "material"), _part(request, "plant"),
             _part(request, "storageLocation"))
    doc, _ = state.post_movement(_part(request, "reference"), where,
                                 _part(request, "movementType"),
                                 _decimal(_part(request, "quantity"), "quantity"),
                                 kind="goods_movement")
    root = etree.Element(f"{{{LEGACY_NS}}}PostGoodsMovementResponse")
    etree.SubElement(root, "documentNumber").text = doc.number
    return root


def find_movement(state: ErpState, request: etree._Element) -> etree._Element:
    doc = state.find(_part(request, "reference"))
    root = etree.Element(f"{{{LEGACY_NS}}}FindMovementResponse")
    etree.SubElement(root, "documentNumber").text = doc.number if doc else ""
    return root


DOC_OPERATIONS: dict[str, Handler] = {
    "PostStockAdjustment": post_stock_adjustment, "CreateSalesOrder": create_sales_order,
    "ReserveStock": reserve_stock, "QueryStock": query_stock, "FindDocument": find_document,
    "GetStockChanges": get_stock_changes, "ReleaseReservation": release_reservation,
    "CancelSalesOrderLines": cancel_sales_order_lines, "GetPriceChanges": get_price_changes}
RPC_OPERATIONS: dict[str, Handler] = {
    "GetStockLevel": get_stock_level, "PostGoodsMovement": post_goods_movement,
    "FindMovement": find_movement}
