"""The officer web console: server-rendered Chinese pages that read and write through the staff
API, with the officer's session in an HttpOnly cookie."""
