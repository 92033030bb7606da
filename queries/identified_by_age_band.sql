-- title: Persons identified as victims of trafficking, by age band at screening
-- dimensions: age_band
-- population: persons screened
-- where: outcome = identified
-- counts: distinct persons screened in the window and identified as victims of trafficking
-- order: 21
SELECT age_band, count(*) AS count
FROM screening_persons
WHERE outcome = 'identified'
GROUP BY age_band
