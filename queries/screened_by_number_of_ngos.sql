-- title: Persons screened, by the number of NGOs that screened them
-- dimensions: ngos
-- population: persons screened
-- counts: distinct persons screened in the window, by how many member NGOs screened them (more than one: seen by several NGOs)
-- percent: ngos
-- order: 31
SELECT CASE WHEN n >= 3 THEN '3 or more' ELSE CAST(n AS VARCHAR) END AS ngos,
       count
FROM (
    SELECT CASE WHEN organisations >= 3 THEN 3 ELSE organisations END AS n,
           count(*) AS count
    FROM screening_persons
    GROUP BY 1
)
