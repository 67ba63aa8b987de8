"""Websites: sitemaps and a link crawl within allowed hosts, robots.txt, conditional GETs."""
