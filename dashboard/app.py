"""The Streamlit entry point (`icu dashboard` runs ``streamlit run`` on this file).

Builds the settings once per server process from ``ICU_*`` variables, keeps one database handle
and one Kafka client set per process (``st.cache_resource``), asks who is there (OIDC through
``st.login`` when ``[auth]`` is in Streamlit's secrets, else a password from
``ICU_DASHBOARD_USERS``, else anonymous only in demo mode) and hands the page to
:mod:`dashboard.pages`.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dashboard.auth import check_login
from dashboard.broker import DashboardBroker
from dashboard.data import Database
from dashboard.pages import Context, alerts_page, patient_page, system_page, ward_page
from dashboard.settings import DashboardSettings
from icu.settings import ConfigError, load_settings

PAGES = {"ward": ward_page, "patient": patient_page, "alerts": alerts_page, "system": system_page}


@st.cache_resource
def _settings() -> DashboardSettings:
    return load_settings(DashboardSettings)


def _close(resource: Database | DashboardBroker) -> None:
    resource.close()


@st.cache_resource(on_release=_close)
def _database(url: str) -> Database:
    return Database(url)


@st.cache_resource(on_release=_close)
def _broker(bootstrap: str, prefix: str) -> DashboardBroker:
    settings = _settings()
    return DashboardBroker(settings, settings)


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all: Streamlit raises its own not-found error
        return False


def current_user(settings: DashboardSettings) -> str | None:
    """The signed-in user's name, or None after drawing the login form (the caller stops)."""
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("icu-watch")
            st.button("Log in", on_click=st.login, type="primary")
            return None
        return str(st.user.get("name") or st.user.get("email") or st.user.get("sub"))
    users = settings.users()
    if users:
        user = st.session_state.get("user")
        if isinstance(user, str):
            return user
        st.title("icu-watch")
        with st.form("login"):
            name = st.text_input("User")
            password = st.text_input("Password", type="password")
            submitted = st.form_submit_button("Log in", type="primary")
        if submitted:
            if check_login(users, name, password):
                st.session_state["user"] = name.strip()
                st.rerun()
            st.error("Unknown user or wrong password.")
        return None
    if settings.demo:
        return "demo"
    st.error(
        "No login is configured. Set ICU_DASHBOARD_USERS (name:hash pairs from `icu dashboard --hash-password`), "
        "or [auth] in .streamlit/secrets.toml for OIDC; ICU_DEMO=1 allows anonymous access for demos."
    )
    return None


def _sidebar(settings: DashboardSettings, user: str) -> None:
    st.sidebar.caption(f"Signed in as **{user}**" + (" (demo mode)" if settings.demo and user == "demo" else ""))
    if _oidc_configured():
        st.sidebar.button("Log out", on_click=st.logout)
    elif "user" in st.session_state and st.sidebar.button("Log out"):
        del st.session_state["user"]
        st.rerun()
    st.sidebar.caption("Not a medical device: the video model is trained on synthetic data only.")


def _bound(page: Callable[[Context], None], ctx: Context) -> Callable[[], None]:
    def run() -> None:
        page(ctx)

    run.__name__ = page.__name__  # Streamlit names a callable page after its function
    return run


def main(page: str | None = None) -> None:
    """Run the app; ``page`` renders one page directly (what the AppTest tests use)."""
    st.set_page_config(page_title="icu-watch", page_icon="🩺", layout="wide")
    try:
        settings = _settings()
        url = settings.require_database_url()
    except ConfigError as exc:
        st.error(str(exc))
        st.stop()
    user = current_user(settings)
    if user is None:
        st.stop()
    assert user is not None  # st.stop() ends the run
    _sidebar(settings, user)
    ctx = Context(
        settings=settings,
        db=_database(url),
        broker=_broker(settings.kafka_bootstrap_servers, settings.topic_prefix),
        user=user,
    )
    if page is not None:
        PAGES[page](ctx)
        return
    pages = {
        name: st.Page(_bound(fn, ctx), title=name.capitalize(), url_path=name, default=name == "ward")
        for name, fn in PAGES.items()
    }
    ctx.switch_to_patient = lambda: st.switch_page(pages["patient"])
    st.navigation(list(pages.values()), position="top").run()


if __name__ == "__main__":
    main()
