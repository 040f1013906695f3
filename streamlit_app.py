"""Dashboard placeholder (the dashboard issue replaces it): shows the pipeline's counts."""

import streamlit as st

from reddit_dagster import db
from reddit_dagster.store import pipeline_status

st.set_page_config(page_title="reddit_dagster", layout="wide")
st.title("reddit_dagster")
try:
    status = pipeline_status(db.shared_engine())
except Exception as exc:  # the page must explain, not show a traceback
    st.error(f"Database unreachable: {db.first_line(exc)}")
else:
    cols = st.columns(4)
    for col, key in zip(cols, ("posts", "pending", "sent", "dead"), strict=True):
        col.metric(key, status[key])
