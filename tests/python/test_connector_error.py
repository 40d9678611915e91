"""`PUT /_connector/<id>/_error` through esgate with the official Python client (elasticsearch 9.x).

Valid bodies are forwarded (canonicalised) to the development upstream; invalid ones get
Elasticsearch's exact 400 from esgate itself, which the client must raise as `BadRequestError`
(never `UnsupportedProductError`, its answer to a 2xx without `X-elastic-product`).
"""

import uuid

import pytest
from elasticsearch import BadRequestError, NotFoundError, UnsupportedProductError


def parse_error_400(reason):
    """Elasticsearch's body for an `x_content_parse_exception` 400 with this reason."""
    cause = {"type": "x_content_parse_exception", "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": 400}


# The client serialises compactly (`{"error":1}`), so the locations are those of the compact body.
# Reasons as Elasticsearch 9.x writes them (the project's oracle, tests/oracle, answers the same bodies the same way).
INVALID_BODIES = [
    pytest.param(
        {"error": 1},
        "[1:10] [connector_update_error_request] error doesn't support values of type: VALUE_NUMBER",
        id="number",
    ),
    pytest.param(
        {"eror": "x"},
        "[1:2] [connector_update_error_request] unknown field [eror] did you mean [error]?",
        id="misspelt-field",
    ),
]


def expect_bad_request(call):
    """Runs `call`, which must raise `BadRequestError`; returns it."""
    try:
        call()
    except UnsupportedProductError as e:
        pytest.fail(f"the client took esgate for another product: {e!r} (body {e.body!r})")
    except BadRequestError as e:
        return e
    pytest.fail("the request succeeded; expected a 400")


def test_update_error_sets_the_error(es, connector):
    resp = es.connector.update_error(connector_id=connector, error="Houston, we have a problem!")
    assert resp["result"] == "updated"
    doc = es.connector.get(connector_id=connector)
    assert doc["status"] == "error"
    assert doc["error"] == "Houston, we have a problem!"


def test_update_error_keeps_unicode_and_escapes(es, connector):
    message = 'línea 1\nlínea 2\t"quoted" \\ back/slash \u0001 ✓ 🚀'
    resp = es.connector.update_error(connector_id=connector, error=message)
    assert resp["result"] == "updated"
    assert es.connector.get(connector_id=connector)["error"] == message


def test_null_error_resets_to_connected(es, connector):
    es.connector.update_error(connector_id=connector, error="boom")
    assert es.connector.get(connector_id=connector)["status"] == "error"
    # `error=None` is refused by the client itself; a reset needs the body (elasticsearch-py raises ValueError for error=None).
    resp = es.connector.update_error(connector_id=connector, body={"error": None})
    assert resp["result"] == "updated"
    doc = es.connector.get(connector_id=connector)
    assert doc["status"] == "connected"
    assert doc["error"] is None


@pytest.mark.parametrize("body, reason", INVALID_BODIES)
def test_invalid_body_gets_elasticsearchs_400(esgate, es, connector, body, reason):
    # A new client, whose product check has not seen any answer yet.
    client = esgate.client()
    try:
        err = expect_bad_request(lambda: client.connector.update_error(connector_id=connector, body=body))
    finally:
        client.close()
    assert err.status_code == 400
    assert err.error == "x_content_parse_exception"
    assert err.body == parse_error_400(reason)
    # Answered by esgate: the connector is untouched.
    doc = es.connector.get(connector_id=connector)
    assert doc["status"] == "created"
    assert doc["error"] is None


def test_missing_connector_is_elasticsearchs_404(es):
    with pytest.raises(NotFoundError) as info:
        es.connector.update_error(connector_id="py-nobody-here", error="x")
    assert info.value.error == "document_missing_exception"


def test_compressed_update_error(esgate, es, connector):
    client = esgate.client(http_compress=True)
    try:
        resp = client.connector.update_error(connector_id=connector, error="compressed ✓")
    finally:
        client.close()
    assert resp["result"] == "updated"
    doc = es.connector.get(connector_id=connector)
    assert doc["status"] == "error"
    assert doc["error"] == "compressed ✓"


@pytest.mark.parametrize("body, reason", INVALID_BODIES)
def test_compressed_invalid_body_gets_elasticsearchs_400(esgate, es, connector, body, reason):
    client = esgate.client(http_compress=True)
    try:
        err = expect_bad_request(lambda: client.connector.update_error(connector_id=connector, body=body))
    finally:
        client.close()
    assert err.error == "x_content_parse_exception"
    assert err.body == parse_error_400(reason)
    assert es.connector.get(connector_id=connector)["status"] == "created"


# elasticsearch-py encodes text with `surrogatepass`: a lone surrogate (what `os.fsdecode` makes
# of a file name that is not UTF-8) goes out as the raw bytes ED B2 80. Releases on jackson-core
# 2.20 and older (9.2 here) accept such a body; 2.21+ (9.5, the default development upstream)
# refuse it.
SURROGATE_ERROR = "cannot read /data/caf\udcb2.csv"


def test_surrogatepass_error_is_forwarded_to_9_2(esgate_92):
    client = esgate_92.client()
    try:
        connector_id = f"py-{uuid.uuid4().hex[:12]}"
        client.connector.put(connector_id=connector_id, index_name=f"search-{connector_id}", name="surrogates")
        resp = client.connector.update_error(connector_id=connector_id, error=SURROGATE_ERROR)
        assert resp["result"] == "updated"
        doc = client.connector.get(connector_id=connector_id)
    finally:
        client.close()
    assert doc["status"] == "error"
    # The development upstream keeps the lone surrogate as U+FFFD (Elasticsearch keeps it as is).
    assert doc["error"] == "cannot read /data/caf\ufffd.csv"


def test_surrogatepass_error_is_refused_for_9_5(es, connector):
    err = expect_bad_request(lambda: es.connector.update_error(connector_id=connector, error=SURROGATE_ERROR))
    assert err.error == "x_content_parse_exception"
    cause = err.body["error"]["caused_by"]["reason"]
    assert cause.startswith("[1:35] Invalid UTF-8: Illegal surrogate character 0xdcb2"), cause
    assert es.connector.get(connector_id=connector)["status"] == "created"
