-- Why a refused filing request was refused, one problem a row, in the order found.
SELECT p.problem
FROM filing_request AS r, jsonb_array_elements_text(r.problems) WITH ORDINALITY AS p (problem, n)
WHERE r.id = %(id)s
ORDER BY p.n;
