"""Throttles for the scopes in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]: predictions (anonymous by
address, users by account), exports (by account) and password attempts (by address: the token endpoint, the
login form, and account deletion's password)."""

from __future__ import annotations

from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class AnonPredictThrottle(AnonRateThrottle):
    scope = "anon_predict"


class UserPredictThrottle(UserRateThrottle):
    scope = "user_predict"

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None  # anonymous callers are AnonPredictThrottle's
        return super().get_cache_key(request, view)


class ExportThrottle(UserRateThrottle):
    """Downloading all of one's drawings builds a zip: a few an hour is plenty."""

    scope = "export"


class LoginThrottle(SimpleRateThrottle):
    """Counts password attempts per client address; works on DRF and plain Django requests."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
