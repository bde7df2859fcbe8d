"""Steps 1 and 3: admin consent for the mail-flow app and for the directory-sync app."""
