"""The central server: accepts sensors, stores CDRs, routes GUI commands."""
