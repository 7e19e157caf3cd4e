"""Dashboard: the nurses' Streamlit view. Delivered by its own issue."""
