"""Container health check: exit 0 when the server is ready, 1 otherwise.

GETs http://127.0.0.1:$MODELPORT_HEALTH_PORT/v2/health/ready (port 8080 by default); only
a 200 answer counts as healthy. Standard library only, so it runs in the image as is.
"""

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("MODELPORT_HEALTH_PORT", "8080")
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed http URL
            return 0 if response.status == 200 else 1
    except Exception:  # any failure to answer 200 is "unhealthy"
        return 1


if __name__ == "__main__":
    sys.exit(main())
