"""Stage 6: export (adapter, merged model) and chat."""
