"""A short, human description of a browser from its User-Agent header."""

from functools import lru_cache

from ua_parser import parse


@lru_cache(maxsize=2048)
def describe_device(user_agent: str) -> str:
    """'Firefox 128 on Windows', 'Mobile Safari on iOS', or 'Unknown device'."""
    if not user_agent:
        return "Unknown device"
    result = parse(user_agent)
    browser = result.user_agent.family if result.user_agent else ""
    if browser and browser != "Other" and result.user_agent.major:
        browser = f"{browser} {result.user_agent.major}"
    system = result.os.family if result.os and result.os.family != "Other" else ""
    if browser and browser != "Other" and system:
        return f"{browser} on {system}"
    return browser if browser and browser != "Other" else system or "Unknown device"
