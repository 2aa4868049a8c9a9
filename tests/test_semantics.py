"""rawserve.protocols.semantics: the request-head rules, trailers, response
heads, RFC 9218 write order and rate limits HTTP/2 and HTTP/3 share. Pure
functions, tested on lists of fields; no connection involved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawserve.core.priority import Priority
from rawserve.protocols.semantics import (
    CONNECTION_SPECIFIC,
    MalformedMessage,
    RateLimit,
    RequestHead,
    WriteGroup,
    check_field,
    check_trailers,
    parse_request_head,
    response_head,
    write_order,
)

Fields = list[tuple[bytes, bytes]]

GET: Fields = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/a/b?x=1"),
    (b":authority", b"example.com"),
]


# -- valid request heads ----------------------------------------------------------


def test_valid_head_keeps_pseudo_headers_and_regular_fields_in_order() -> None:
    head = parse_request_head([*GET, (b"accept", b"*/*"), (b"x-a", b"1")])
    assert head == RequestHead(
        method=b"GET",
        scheme=b"https",
        path=b"/a/b?x=1",
        authority=b"example.com",
        headers=[(b"accept", b"*/*"), (b"x-a", b"1")],
        size=sum(len(n) + len(v) + 32 for n, v in [*GET, (b"accept", b"*/*"), (b"x-a", b"1")]),
    )


def test_cookies_are_joined_into_one_field_at_the_end() -> None:
    head = parse_request_head([*GET, (b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")])
    assert head.headers == [(b"x-a", b"1"), (b"cookie", b"a=1; b=2")]


def test_fields_the_server_acts_on_are_picked_out_and_kept() -> None:
    head = parse_request_head(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/p"),
            (b"content-length", b"12"),
            (b"priority", b"u=1, i"),
            (b"expect", b"100-Continue"),
            (b"te", b"Trailers"),
        ]
    )
    assert head.content_length == 12
    assert head.priority_field == b"u=1, i"
    assert head.expect_continue is True
    assert head.authority is None
    assert [name for name, _ in head.headers] == [b"content-length", b"priority", b"expect", b"te"]


def test_host_stands_in_for_a_missing_authority() -> None:
    head = parse_request_head([*GET[:3], (b"host", b"h.example")])
    assert head.authority == b"h.example"


def test_host_equal_to_authority_is_accepted() -> None:
    assert parse_request_head([*GET, (b"host", b"example.com")]).authority == b"example.com"


def test_repeated_equal_content_length_is_one_length() -> None:
    head = parse_request_head([*GET, (b"content-length", b"5"), (b"content-length", b"5")])
    assert head.content_length == 5


def test_options_asterisk_and_non_http_scheme_paths() -> None:
    head = parse_request_head([(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":path", b"*")])
    assert head.path == b"*"
    # The absolute-path rule is for http and https only.
    head = parse_request_head([(b":method", b"GET"), (b":scheme", b"foo"), (b":path", b"x")])
    assert head.scheme == b"foo"


def test_connect_needs_only_authority() -> None:
    head = parse_request_head([(b":method", b"CONNECT"), (b":authority", b"proxy.example:443")])
    assert (head.method, head.authority, head.scheme, head.path) == (
        b"CONNECT",
        b"proxy.example:443",
        None,
        None,
    )


# -- malformed request heads ------------------------------------------------------

MALFORMED: dict[str, tuple[Fields, str]] = {
    "uppercase name": ([*GET, (b"Accept", b"*/*")], "invalid header name"),
    "empty name": ([*GET, (b"", b"x")], "invalid header name"),
    "space in name": ([*GET, (b"x a", b"1")], "invalid header name"),
    "NUL in value": ([*GET, (b"x-a", b"a\x00b")], "invalid value"),
    "LF in value": ([*GET, (b"x-a", b"a\nb")], "invalid value"),
    "leading space in value": ([*GET, (b"x-a", b" a")], "invalid value"),
    "trailing tab in value": ([*GET, (b"x-a", b"a\t")], "invalid value"),
    "TE gzip": ([*GET, (b"te", b"gzip")], "TE header"),
    "TE trailers, gzip": ([*GET, (b"te", b"trailers, gzip")], "TE header"),
    "missing :method": ([h for h in GET if h[0] != b":method"], ":method"),
    "space in :method": ([(b":method", b"G T"), *GET[1:]], ":method"),
    "missing :scheme": ([h for h in GET if h[0] != b":scheme"], ":scheme"),
    "invalid :scheme": ([GET[0], (b":scheme", b"ht tp"), *GET[2:]], ":scheme"),
    "missing :path": ([h for h in GET if h[0] != b":path"], ":path"),
    "empty :path": ([*GET[:2], (b":path", b""), GET[3]], ":path"),
    "space in :path": ([*GET[:2], (b":path", b"/a b"), GET[3]], "invalid :path"),
    "DEL in :path": ([*GET[:2], (b":path", b"/a\x7f"), GET[3]], "invalid :path"),
    "relative :path": ([*GET[:2], (b":path", b"a/b"), GET[3]], "neither absolute"),
    "asterisk for GET": ([*GET[:2], (b":path", b"*"), GET[3]], "neither absolute"),
    "duplicate :path": ([*GET, (b":path", b"/again")], "duplicate pseudo-header"),
    "duplicate :method": ([GET[0], *GET], "duplicate pseudo-header"),
    "response pseudo-header": ([*GET, (b":status", b"200")], "unknown or response"),
    "unknown pseudo-header": ([*GET, (b":protocol", b"websocket")], "unknown or response"),
    "pseudo after regular": ([*GET[:3], (b"x-a", b"1"), GET[3]], "after a regular header"),
    "pseudo after cookie": ([*GET[:3], (b"cookie", b"a=1"), GET[3]], "after a regular header"),
    "CONNECT with :path": (
        [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],
        "CONNECT",
    ),
    "CONNECT with :scheme": (
        [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":scheme", b"https")],
        "CONNECT",
    ),
    "CONNECT without :authority": ([(b":method", b"CONNECT")], "CONNECT"),
    "userinfo in :authority": ([*GET[:3], (b":authority", b"u@example.com")], ":authority"),
    "space in :authority": ([*GET[:3], (b":authority", b"a b")], ":authority"),
    "host differs from :authority": ([*GET, (b"host", b"other.com")], "differs"),
    "content-length not a number": ([*GET, (b"content-length", b"1x")], "content-length"),
    "negative content-length": ([*GET, (b"content-length", b"-1")], "content-length"),
    "huge content-length": ([*GET, (b"content-length", b"9" * 19)], "content-length"),
    "conflicting content-length": (
        [*GET, (b"content-length", b"1"), (b"content-length", b"2")],
        "content-length",
    ),
}


@pytest.mark.parametrize(("fields", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_heads_raise_with_a_message(fields: Fields, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        parse_request_head(fields)


@pytest.mark.parametrize("name", sorted(CONNECTION_SPECIFIC))
def test_connection_specific_fields_are_malformed(name: bytes) -> None:
    with pytest.raises(MalformedMessage, match="connection-specific"):
        parse_request_head([*GET, (name, b"x")])
    with pytest.raises(MalformedMessage, match="connection-specific"):
        check_field(name, b"x")


def test_a_name_seen_valid_does_not_make_its_uppercase_form_valid() -> None:
    parse_request_head([*GET, (b"x-seen", b"1")])
    with pytest.raises(MalformedMessage, match="invalid header name"):
        parse_request_head([*GET, (b"X-Seen", b"1")])
    # And a value is checked every time, whatever the name.
    with pytest.raises(MalformedMessage, match="invalid value"):
        parse_request_head([*GET, (b"x-seen", b"a\rb")])


# -- single fields and trailers ------------------------------------------------------


def test_check_field_accepts_tokens_and_te_trailers() -> None:
    check_field(b"x-custom_1.2~", b"v a l u e")
    check_field(b"te", b"trailers")
    check_field(b"x-empty", b"")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (b"X-Upper", b"1", "invalid header name"),
        (b"x:colon", b"1", "invalid header name"),
        (b"x-a", b"a\r\nb", "invalid value"),
        (b"te", b"deflate", "TE header"),
    ],
)
def test_check_field_rejects(name: bytes, value: bytes, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        check_field(name, value)


def test_trailers_with_valid_fields_pass() -> None:
    check_trailers([(b"grpc-status", b"0"), (b"x-checksum", b"abc")])
    check_trailers([])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([(b"x-a", b"1"), (b":status", b"200")], "pseudo-header"),
        ([(b":path", b"/")], "pseudo-header"),
        ([(b"transfer-encoding", b"chunked")], "connection-specific"),
        ([(b"X-A", b"1")], "invalid header name"),
    ],
)
def test_malformed_trailers(fields: Fields, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        check_trailers(fields)


# -- response heads -----------------------------------------------------------------


def test_response_head_filters_what_http2_and_http3_forbid() -> None:
    fields = response_head(
        200,
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"close"),
            (b"transfer-encoding", b"chunked"),
            (b":status", b"500"),
            (b"x-split", b"a\r\nb"),
            (b"x-ok", b"1"),
        ],
        server=b"rawserve",
        date=b"Thu, 01 Jan 2026 00:00:00 GMT",
    )
    assert fields == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"x-ok", b"1"),
        (b"server", b"rawserve"),
        (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
    ]


def test_response_head_keeps_the_applications_server_and_date() -> None:
    fields = response_head(
        404, [(b"Server", b"mine"), (b"date", b"then")], server=b"rawserve", date=b"now"
    )
    assert fields == [(b":status", b"404"), (b"server", b"mine"), (b"date", b"then")]


def test_informational_head_gets_no_server_or_date() -> None:
    assert response_head(103, [(b"link", b"</a>; rel=preload")]) == [
        (b":status", b"103"),
        (b"link", b"</a>; rel=preload"),
    ]


# -- RFC 9218 write order -------------------------------------------------------------


def test_write_order_urgency_first_then_sequential_before_interleaved() -> None:
    ready = [
        (9, Priority(3, False)),
        (3, Priority(0, True)),
        (13, Priority(3, True)),
        (1, Priority(3, False)),
        (11, Priority(7, True)),
        (7, Priority(0, False)),
        (5, Priority(3, True)),
    ]
    assert write_order(ready) == [
        WriteGroup(0, False, (7,)),
        WriteGroup(0, True, (3,)),
        WriteGroup(3, False, (1, 9)),
        WriteGroup(3, True, (5, 13)),
        WriteGroup(7, True, (11,)),
    ]


def test_write_order_of_nothing_is_empty() -> None:
    assert write_order([]) == []


def test_default_priority_streams_go_out_in_stream_order() -> None:
    assert write_order([(5, Priority()), (1, Priority()), (3, Priority())]) == [
        WriteGroup(3, False, (1, 3, 5))
    ]


@given(
    st.dictionaries(
        st.integers(min_value=1, max_value=1000),
        st.builds(Priority, st.integers(min_value=0, max_value=7), st.booleans()),
        max_size=40,
    )
)
def test_write_order_groups_every_stream_once_in_priority_order(
    streams: dict[int, Priority],
) -> None:
    groups = write_order(streams.items())
    ids = [sid for g in groups for sid in g.stream_ids]
    assert sorted(ids) == sorted(streams)
    assert len(ids) == len(streams)
    keys = [(g.urgency, g.incremental) for g in groups]
    assert keys == sorted(set(keys)), "one group per priority, most urgent first"
    for g in groups:
        assert list(g.stream_ids) == sorted(g.stream_ids)
        assert all(streams[sid] == Priority(g.urgency, g.incremental) for sid in g.stream_ids)


# -- rate limits ---------------------------------------------------------------------


def test_rate_limit_allows_a_burst_of_rate_events_then_refuses() -> None:
    limit = RateLimit(3)
    assert [limit.exceeded(10.0) for _ in range(4)] == [False, False, False, True]


def test_rate_limit_refills_at_rate_per_second() -> None:
    limit = RateLimit(4)
    assert not any(limit.exceeded(0.0) for _ in range(4))
    assert limit.exceeded(0.0)  # the bucket is now one below empty
    # Half a second earns 2 tokens: one repays the overdraft, one event fits.
    assert not limit.exceeded(0.5)
    assert limit.exceeded(0.5)


def test_rate_limit_burst_is_capped_after_a_long_quiet() -> None:
    limit = RateLimit(2)
    limit.exceeded(0.0)
    results = [limit.exceeded(100.0) for _ in range(3)]
    assert results == [False, False, True]


def test_rate_limit_ignores_time_going_backwards() -> None:
    limit = RateLimit(1)
    assert not limit.exceeded(5.0)
    assert limit.exceeded(4.0)  # no refill from an earlier clock reading
    assert limit.exceeded(5.0)


def test_rate_limit_zero_disables() -> None:
    limit = RateLimit(0)
    assert not any(limit.exceeded(0.0) for _ in range(10_000))
