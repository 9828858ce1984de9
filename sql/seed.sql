-- Demo CRM seed: two teams, five users. Ids are fixed so that the demo's
-- printed tokens name real rows.
INSERT INTO teams (id, name) VALUES (1, 'Pacific Realty'), (2, 'Summit Homes');
INSERT INTO users (id, email, full_name, role) VALUES
    (1, 'ana@pacific.example', 'Ana Ruiz', 'broker'),
    (2, 'ben@pacific.example', 'Ben Okafor', 'agent'),
    (3, 'cara@pacific.example', 'Cara Lindqvist', 'agent'),
    (4, 'dev@summit.example', 'Dev Patel', 'broker'),
    (5, 'eli@summit.example', 'Eli Novak', 'agent');
INSERT INTO team_members (team_id, user_id) VALUES (1, 1), (1, 2), (1, 3), (2, 4), (2, 5);
SELECT setval(pg_get_serial_sequence('teams', 'id'), 2);
SELECT setval(pg_get_serial_sequence('users', 'id'), 5);
