"""Core values every part of rawserve agrees on: errors, configuration, stream
events and priority. Standard library only."""
