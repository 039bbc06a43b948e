"""Reads one SSE stream with an unmodified published client and prints each event it
fires as one JSON line {"type","id","data"}, stopping after a final status event.
Usage: python clients.py <httpx-sse|sseclient-py> <url>"""

import json
import sys

import httpx


def is_final(kind, data):
    if kind != "status":
        return False
    try:
        return json.loads(data).get("final") is True
    except ValueError:
        return False


def emit(kind, event_id, data):
    print(json.dumps({"type": kind, "id": event_id, "data": data}), flush=True)
    return is_final(kind, data)


def main():
    client, url = sys.argv[1], sys.argv[2]
    with httpx.Client(timeout=None) as http:
        if client == "httpx-sse":
            from httpx_sse import connect_sse

            with connect_sse(http, "GET", url) as source:
                for sse in source.iter_sse():
                    if emit(sse.event, sse.id or None, sse.data):
                        return
        elif client == "sseclient-py":
            import sseclient

            with http.stream("GET", url) as resp:
                for event in sseclient.SSEClient(resp.iter_bytes()).events():
                    if emit(event.event, event.id, event.data):
                        return
        else:
            sys.exit(f"unknown client {client}")


if __name__ == "__main__":
    main()
